//! Maker-checker: drafts, proposals, approvals and deployments.
//!
//! An analyst edits a draft of their own and proposes it; only a rule set
//! that checks may be proposed. A user with the approver role who is not
//! the proposer approves (or rejects) it; an approved proposal is deployed
//! by publishing it as the next rule-set version, and only while the
//! serving version is still the one it was proposed against, so a deploy
//! never silently undoes a change approved in between. A rollback is a
//! proposal whose files are an earlier version's, through the same steps.
//!
//! This module holds the state and its rules; the HTTP handlers check the
//! rule set, publish, and write the audit log. The state is kept in
//! `state.json`, replaced atomically after every change, so drafts and
//! proposals survive a restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::WorkbenchError;
use crate::files::RuleFiles;

/// At most this many proposals are kept; the oldest finished ones go first.
const MAX_PROPOSALS: usize = 1000;

/// One analyst's work in progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draft {
    pub files: RuleFiles,
    /// RFC 3339.
    pub saved_at: String,
    /// The version number the draft started from.
    pub base: u64,
}

/// Where a proposal is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Status {
    /// Waiting for an approver.
    Proposed,
    Approved {
        by: String,
        at: String,
    },
    Rejected {
        by: String,
        at: String,
        note: String,
    },
    /// Published as version `number`.
    Deployed {
        by: String,
        at: String,
        number: u64,
    },
}

/// A change waiting for, or past, its second pair of eyes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: u64,
    pub files: RuleFiles,
    /// The content hash the files checked to.
    pub version: String,
    /// The serving version number it was proposed against (0: none).
    pub base: u64,
    pub proposed_by: String,
    pub proposed_at: String,
    pub note: String,
    /// The earlier version it restores, for a rollback.
    pub restores: Option<u64>,
    pub status: Status,
}

/// Why a step is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error("there is no proposal {0}")]
    NoProposal(u64),
    #[error("you proposed this change: another approver must approve it")]
    OwnChange,
    #[error("proposal {id} is {state}, not {wanted}")]
    WrongState {
        id: u64,
        state: &'static str,
        wanted: &'static str,
    },
    #[error(
        "proposal {id} was made against version {base}, but version {serving} serves now: propose it again on top of what serves"
    )]
    Stale { id: u64, base: u64, serving: u64 },
}

impl Status {
    fn name(&self) -> &'static str {
        match self {
            Status::Proposed => "proposed",
            Status::Approved { .. } => "approved",
            Status::Rejected { .. } => "rejected",
            Status::Deployed { .. } => "deployed",
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    drafts: BTreeMap<String, Draft>,
    proposals: Vec<Proposal>,
    next_id: u64,
}

/// The drafts and proposals, saved in a file.
pub struct Flow {
    path: PathBuf,
    // A std mutex: held while the state changes and is written (on a
    // blocking thread), never across an await.
    state: Mutex<State>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Flow {
    /// Opens `path`, or starts empty when it does not exist.
    pub fn open(path: &Path) -> Result<Flow, WorkbenchError> {
        let state = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| WorkbenchError::State {
                path: path.to_path_buf(),
                why: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State {
                next_id: 1,
                ..State::default()
            },
            Err(e) => {
                return Err(WorkbenchError::io(
                    "cannot read the workbench state",
                    path,
                    e,
                ));
            }
        };
        Ok(Flow {
            path: path.to_path_buf(),
            state: Mutex::new(state),
        })
    }

    fn change<T>(
        &self,
        f: impl FnOnce(&mut State) -> Result<T, FlowError>,
    ) -> Result<Result<T, FlowError>, WorkbenchError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let out = match f(&mut state) {
            Ok(out) => out,
            Err(e) => return Ok(Err(e)),
        };
        let bytes = serde_json::to_vec(&*state).expect("the state always serialises");
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)
        };
        write()
            .map_err(|e| WorkbenchError::io("cannot write the workbench state", &self.path, e))?;
        Ok(Ok(out))
    }

    pub fn draft(&self, user: &str) -> Option<Draft> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drafts
            .get(user)
            .cloned()
    }

    /// Saves a user's draft; answers the one it replaces. Blocking.
    pub fn save_draft(
        &self,
        user: &str,
        files: RuleFiles,
        base: u64,
    ) -> Result<(Draft, Option<Draft>), WorkbenchError> {
        let draft = Draft {
            files,
            saved_at: now(),
            base,
        };
        let d = draft.clone();
        self.change(move |s| Ok(s.drafts.insert(user.to_owned(), d)))
            .map(|r| (draft, r.unwrap_or(None)))
    }

    /// Records a proposal of files that checked. Blocking.
    pub fn propose(
        &self,
        user: &str,
        files: RuleFiles,
        version: String,
        base: u64,
        note: String,
        restores: Option<u64>,
    ) -> Result<Proposal, WorkbenchError> {
        self.change(|s| {
            let p = Proposal {
                id: s.next_id.max(1),
                files,
                version,
                base,
                proposed_by: user.to_owned(),
                proposed_at: now(),
                note,
                restores,
                status: Status::Proposed,
            };
            s.next_id = p.id + 1;
            s.proposals.push(p.clone());
            if s.proposals.len() > MAX_PROPOSALS
                && let Some(i) = s.proposals.iter().position(|p| {
                    matches!(p.status, Status::Rejected { .. } | Status::Deployed { .. })
                })
            {
                s.proposals.remove(i);
            }
            Ok(p)
        })
        .map(|r| r.expect("proposing cannot be refused"))
    }

    pub fn proposals(&self) -> Vec<Proposal> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .proposals
            .clone()
    }

    pub fn proposal(&self, id: u64) -> Option<Proposal> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .proposals
            .iter()
            .find(|p| p.id == id)
            .cloned()
    }

    fn step(
        &self,
        id: u64,
        f: impl FnOnce(&mut Proposal) -> Result<(), FlowError>,
    ) -> Result<Result<Proposal, FlowError>, WorkbenchError> {
        self.change(|s| {
            let p = s
                .proposals
                .iter_mut()
                .find(|p| p.id == id)
                .ok_or(FlowError::NoProposal(id))?;
            f(p)?;
            Ok(p.clone())
        })
    }

    fn expect(p: &Proposal, wanted: &'static str) -> Result<(), FlowError> {
        if p.status.name() == wanted {
            Ok(())
        } else {
            Err(FlowError::WrongState {
                id: p.id,
                state: p.status.name(),
                wanted,
            })
        }
    }

    /// Approves a proposal: by someone other than its proposer, once.
    /// (The caller has checked the approver role.) Blocking.
    pub fn approve(
        &self,
        id: u64,
        user: &str,
    ) -> Result<Result<Proposal, FlowError>, WorkbenchError> {
        self.step(id, |p| {
            Self::expect(p, "proposed")?;
            if p.proposed_by == user {
                return Err(FlowError::OwnChange);
            }
            p.status = Status::Approved {
                by: user.to_owned(),
                at: now(),
            };
            Ok(())
        })
    }

    /// Rejects a proposal (its proposer may withdraw it this way). Blocking.
    pub fn reject(
        &self,
        id: u64,
        user: &str,
        note: String,
    ) -> Result<Result<Proposal, FlowError>, WorkbenchError> {
        self.step(id, |p| {
            Self::expect(p, "proposed")?;
            p.status = Status::Rejected {
                by: user.to_owned(),
                at: now(),
                note,
            };
            Ok(())
        })
    }

    /// The approved proposal to deploy on top of `serving`, or why not.
    pub fn deployable(&self, id: u64, serving: u64) -> Result<Proposal, FlowError> {
        let p = self.proposal(id).ok_or(FlowError::NoProposal(id))?;
        Self::expect(&p, "approved")?;
        if p.base != serving {
            return Err(FlowError::Stale {
                id,
                base: p.base,
                serving,
            });
        }
        Ok(p)
    }

    /// Marks a proposal deployed as version `number`. Blocking.
    pub fn deployed(
        &self,
        id: u64,
        user: &str,
        number: u64,
    ) -> Result<Result<Proposal, FlowError>, WorkbenchError> {
        self.step(id, |p| {
            Self::expect(p, "approved")?;
            p.status = Status::Deployed {
                by: user.to_owned(),
                at: now(),
                number,
            };
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> (tempfile::TempDir, Flow) {
        let dir = tempfile::tempdir().unwrap();
        let flow = Flow::open(&dir.path().join("state.json")).unwrap();
        (dir, flow)
    }

    #[test]
    fn nobody_approves_their_own_change_and_each_step_happens_once() {
        let (_d, flow) = flow();
        let p = flow
            .propose(
                "alice",
                RuleFiles::default(),
                "rs-1".into(),
                0,
                String::new(),
                None,
            )
            .unwrap();
        assert_eq!(
            flow.approve(p.id, "alice").unwrap(),
            Err(FlowError::OwnChange)
        );
        assert_eq!(
            flow.deployable(p.id, 0).unwrap_err().to_string(),
            "proposal 1 is proposed, not approved"
        );
        assert!(flow.approve(p.id, "bob").unwrap().is_ok());
        assert!(matches!(
            flow.approve(p.id, "carol").unwrap(),
            Err(FlowError::WrongState { .. })
        ));
        assert_eq!(
            flow.deployable(p.id, 3),
            Err(FlowError::Stale {
                id: 1,
                base: 0,
                serving: 3
            })
        );
        assert!(flow.deployable(p.id, 0).is_ok());
        assert!(flow.deployed(p.id, "alice", 1).unwrap().is_ok());
        assert!(matches!(
            flow.deployable(p.id, 0),
            Err(FlowError::WrongState { .. })
        ));
    }

    #[test]
    fn drafts_and_proposals_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let files = RuleFiles(BTreeMap::from([("a.rules".to_owned(), "x".to_owned())]));
        {
            let flow = Flow::open(&path).unwrap();
            flow.save_draft("alice", files.clone(), 2).unwrap();
            flow.propose("alice", files.clone(), "rs-1".into(), 2, "n".into(), None)
                .unwrap();
        }
        let flow = Flow::open(&path).unwrap();
        assert_eq!(flow.draft("alice").map(|d| d.files), Some(files));
        let p = flow
            .propose(
                "bob",
                RuleFiles::default(),
                "rs-2".into(),
                2,
                String::new(),
                None,
            )
            .unwrap();
        assert_eq!(p.id, 2, "proposal numbers go on after a restart");
    }
}
