//! The one loop every source decides its stream through: events are
//! prepared (parsed, features read and updated) in the order they are
//! pushed, then scored and decided concurrently, and their outputs come
//! back in push order, with at most `limit` events in flight.
//!
//! The Kafka lane, the file replay and the HTTP API each read their input
//! their own way and write their outputs their own way; between the two
//! they all use a [`Window`]. What it is not: it does no I/O and owns no
//! task; a source polls [`Window::next`] in its own loop, alongside
//! whatever else that loop waits for.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::StreamExt;
use futures::stream::FuturesOrdered;

use crate::engine::{Decided, Output, Rejected};

/// Events in flight, in the order they were pushed, each tagged with what
/// its source needs to write its output (a partition and offset, a reply
/// channel, a line number).
pub struct Window<T, F: Future<Output = Decided>> {
    pending: FuturesOrdered<Pending<T, F>>,
    limit: usize,
}

impl<T, F: Future<Output = Decided>> Window<T, F> {
    /// A window of at most `limit` events in flight (at least one).
    pub fn new(limit: usize) -> Self {
        Window {
            pending: FuturesOrdered::new(),
            limit: limit.max(1),
        }
    }

    /// Queues one event, as [`Engine::prepare`](crate::engine::Engine::prepare)
    /// left it: a decision on its way (the future of
    /// [`Engine::finish`](crate::engine::Engine::finish)), or a rejection.
    /// Call in source order: preparing it is what had to happen in order.
    pub fn push(&mut self, tag: T, prepared: Result<F, Rejected>) {
        self.pending.push_back(Pending {
            tag: Some(tag),
            state: match prepared {
                Ok(deciding) => State::Deciding { deciding },
                Err(rejected) => State::Rejected {
                    rejected: Some(rejected),
                },
            },
        });
    }

    /// The next output in push order, once it is decided; `None` when
    /// nothing is in flight. Cancel-safe: an output not yet taken stays.
    pub async fn next(&mut self) -> Option<(T, Output)> {
        self.pending.next().await
    }

    /// Events pushed whose output has not been taken.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// True when no more events should be pushed until an output is taken.
    pub fn is_full(&self) -> bool {
        self.pending.len() >= self.limit
    }

    /// The most events in flight.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

pin_project_lite::pin_project! {
    /// One event in flight and its tag.
    struct Pending<T, F> {
        tag: Option<T>,
        #[pin]
        state: State<F>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F> {
        Deciding { #[pin] deciding: F },
        Rejected { rejected: Option<Rejected> },
    }
}

impl<T, F: Future<Output = Decided>> Future for Pending<T, F> {
    type Output = (T, Output);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let output = match this.state.project() {
            StateProj::Deciding { deciding } => match deciding.poll(cx) {
                Poll::Ready(decided) => Output::Decision(decided),
                Poll::Pending => return Poll::Pending,
            },
            StateProj::Rejected { rejected } => {
                Output::DeadLetter(rejected.take().expect("a rejection is taken once"))
            }
        };
        Poll::Ready((this.tag.take().expect("an output is taken once"), output))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use verdict_core::{Action, DeadLetter, Decision, Position, Rejection, Scores};

    fn decided(id: &str) -> Decided {
        Decided {
            timestamp_ms: 0,
            decision: Decision {
                event_id: id.into(),
                decision: Action::Approve,
                hits: Vec::new(),
                shadow_hits: Vec::new(),
                scores: Scores::default(),
                explanation: Vec::new(),
                ruleset_version: Arc::from("rs"),
                model_version: None,
                degraded: false,
                latency_us: 0,
                decided_at: 0,
            },
            key: None,
            timings: Default::default(),
        }
    }

    fn rejected() -> Rejected {
        let r = Rejection::NotJson {
            message: "x".into(),
        };
        Rejected {
            letter: Box::new(DeadLetter::new(
                Position::Http { http: "t".into() },
                &r,
                b"{",
            )),
            kind: r.kind(),
        }
    }

    /// Outputs come back in push order even when later events are decided
    /// first, and a rejection waits for the decisions pushed before it.
    #[tokio::test]
    async fn outputs_come_back_in_push_order() {
        let (tx_a, rx_a) = tokio::sync::oneshot::channel::<()>();
        let (tx_b, rx_b) = tokio::sync::oneshot::channel::<()>();
        let wait = |rx: tokio::sync::oneshot::Receiver<()>, id: &'static str| async move {
            let _ = rx.await;
            decided(id)
        };
        let mut w = Window::new(3);
        w.push(1, Ok(wait(rx_a, "a")));
        w.push(2, Err(rejected()));
        w.push(3, Ok(wait(rx_b, "b")));
        assert!(w.is_full());
        tx_b.send(()).unwrap();
        assert!(
            futures::FutureExt::now_or_never(w.next()).is_none(),
            "the first output waits for its own decision"
        );
        tx_a.send(()).unwrap();
        let order: Vec<(i32, bool)> = [
            w.next().await.unwrap(),
            w.next().await.unwrap(),
            w.next().await.unwrap(),
        ]
        .into_iter()
        .map(|(t, o)| (t, matches!(o, Output::Decision(_))))
        .collect();
        assert_eq!(order, [(1, true), (2, false), (3, true)]);
        assert!(w.next().await.is_none());
        assert!(w.is_empty() && !w.is_full());
    }
}
