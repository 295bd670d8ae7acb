//! The traffic generator behind `verdict gen`: deterministic synthetic traffic of a consumer-credit
//! platform, with ground-truth labels, for demos, replays, benchmarks and
//! tests of rules and models.
//!
//! What it is: a [`Generator`] that, from a [`GenConfig`], writes one event
//! per call as a JSON line matching `examples/schema.toml`, plus the batch
//! profile table of the same [`Population`]. What it is not: a model of any
//! real platform's traffic; the shapes below are plausible, the numbers are
//! invented, and the labels are the generator's own.
//!
//! # Determinism
//!
//! Everything is drawn from seeded ChaCha8 streams and event time comes from
//! a synthetic clock, never the wall clock: the same [`GenConfig`] gives the
//! same bytes, on every machine. The population is drawn from its own
//! stream and depends only on `seed` and `users`, so the profile table
//! written by `verdict gen profiles --seed S --users N` describes the users
//! of `verdict gen --seed S --users N` whatever the traffic options.
//!
//! # The clock
//!
//! Time starts at `start_ms` (default 2026-11-01T00:00:00Z) and advances by
//! exponential inter-arrival times whose mean rate is `events_per_sec` of
//! event time (default 0.25/s, about 21,600 events a day, ten a day per
//! user of the default population of 2,000). The rate follows a daily curve
//! in the platform's local time (`utc_offset_hours`, default 0, so local
//! hours are UTC hours): quiet from 01:00 to 06:00, busy from 10:00 to
//! 22:00. Events come out in non-decreasing time order; the events of a
//! fraud burst are interleaved with the organic traffic around them.
//!
//! # The population
//!
//! `users` users (default 2,000), `u_000001` upwards. Each has one or two
//! home devices (`d_000001` upwards, never shared), a home IP in a
//! residential range, a typical payment (log-normal, median 200 CNY), a
//! credit limit (3,000–50,000 CNY) and a profile: casual (45%), regular
//! (40%), heavy (12%) or farm (3%, accounts a few days old used by
//! application farms, with almost no organic activity). The batch table
//! has `user_id,account_age_days,credit_limit,prior_defaults`.
//!
//! # Organic traffic (label `legit`)
//!
//! A user picked by activity does one of: a `login` (30%, no amount), a
//! `payment` (55%, log-normal amount around the user's typical one, at one
//! of 400 merchants, `attributes.merchant`), or a `loan_application` (15%,
//! a round amount, a multiple of 500 CNY, log-normal around a quarter of
//! the credit limit and at most 90% of it, with `attributes.term_months` of
//! 3–36). Mostly from a home device and the home IP; 17% of events come
//! through a shared mobile-carrier gateway, 3% from a hosting/VPN range,
//! and 1.5% from a new phone (`attributes.new_device = true`), so none of
//! these signals is a label on its own. Channel: the user's preferred one
//! (`app`, `web` or `h5`) nine times in ten.
//!
//! # Fraud scenarios
//!
//! `fraud_rate` (default 2%) of all lines are fraud, split between the
//! scenarios by `mix` (default below; the weights are shares of fraud
//! *events*, not of bursts). Every event of a burst carries the scenario's
//! name as its label.
//!
//! | scenario | default share of fraud | what it looks like |
//! |---|---|---|
//! | `device_burst` | 25% | 5–15 `loan_application`s, 5–60 s apart, from one new device and one hosting IP, each for a different account (70% farm accounts, the rest stolen identities), `new_device = true` |
//! | `account_takeover` | 20% | a `login` then 1–3 `payment`s (electronics, gaming, travel) of 50–95% of the credit limit or 5–20× the typical amount, 20 s–5 min apart, from a new device and a hosting IP, `new_device = true` |
//! | `velocity` | 25% | 8–20 `payment`s by one user 5–90 s apart: card testing (1–50 CNY) or resellable goods around the typical amount; home device, carrier or hosting IP |
//! | `under_limit` | 15% | 1–3 applications or payments just under the credit limit (within 2%) or just under a round threshold (1,000 … 50,000, within 1.5%), 1–15 min apart, from the home device |
//! | `night_activity` | 15% | 2–5 events between 01:00 and 05:00 local time with unusual amounts (8× the typical amount, or large applications), 2–15 min apart; home device, often an unusual IP. Started only at night, so its share of the night's traffic is high while its overall share is as configured |
//!
//! A burst still open when the requested count is reached is cut short.
//!
//! # Malformed lines (label `malformed`)
//!
//! `malformed_rate` (default 1%) of lines are broken on purpose, in six
//! kinds of equal weight: truncated JSON; invalid JSON (single quotes, a
//! trailing comma, or form-encoded text); a missing required field
//! (`event_id`, `event_type`, `timestamp` or `user_id`); a field of the
//! wrong type (`amount` or `term_months` as a string, `new_device` as
//! `"yes"`, `user_id` as a number); a bad timestamp (an impossible date,
//! `"yesterday"`, a local-format date, a negative epoch); and a JSON value
//! that is not an object. Every one of them is rejected by
//! `verdict_core::EventParser` against `examples/schema.toml`; every other
//! line is accepted.
//!
//! # Format
//!
//! One object per line, fields in the order of the contract, with a
//! top-level `label` that the schema does not declare (so rules and
//! features never see it). 3% of timestamps are epoch milliseconds, the
//! rest RFC 3339 with milliseconds and `Z`. Event ids (`e-00000001`) count
//! every line, malformed or not, so they are unique within a run.

pub mod cli;
mod json;
mod population;
mod sample;

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::fmt;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use population::{Population, Profile, User};

use json::{Clock, Fault, Omit, Spec, TimeForm};

/// Channels, indexed by `Spec::channel` and `User::channel`.
pub(crate) const CHANNELS: [&str; 3] = ["app", "web", "h5"];

/// Merchant categories; merchant `m` is category `m % 8`, number `m / 8`.
pub(crate) const MERCHANT_CATEGORIES: [&str; 8] = [
    "grocery",
    "electronics",
    "travel",
    "dining",
    "telecom",
    "education",
    "apparel",
    "gaming",
];
const MERCHANTS: u16 = 400;

/// The event types the platform publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventKind {
    LoanApplication,
    Payment,
    Login,
}

impl EventKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::LoanApplication => "loan_application",
            EventKind::Payment => "payment",
            EventKind::Login => "login",
        }
    }
}

/// A labelled fraud scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    DeviceBurst,
    AccountTakeover,
    Velocity,
    UnderLimit,
    NightActivity,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::DeviceBurst,
        Scenario::AccountTakeover,
        Scenario::Velocity,
        Scenario::UnderLimit,
        Scenario::NightActivity,
    ];

    /// The label its events carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::DeviceBurst => "device_burst",
            Scenario::AccountTakeover => "account_takeover",
            Scenario::Velocity => "velocity",
            Scenario::UnderLimit => "under_limit",
            Scenario::NightActivity => "night_activity",
        }
    }

    pub fn from_name(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// The range of the number of events in one burst.
    fn burst_len(self) -> (u32, u32) {
        match self {
            Scenario::DeviceBurst => (5, 15),
            Scenario::AccountTakeover => (2, 4),
            Scenario::Velocity => (8, 20),
            Scenario::UnderLimit => (1, 3),
            Scenario::NightActivity => (2, 5),
        }
    }

    fn mean_len(self) -> f64 {
        let (lo, hi) = self.burst_len();
        f64::from(lo + hi) / 2.0
    }
}

/// The label of organic traffic.
pub const LEGIT: &str = "legit";
/// The label of malformed lines.
pub const MALFORMED: &str = "malformed";
/// Every label [`Generator::write_next`] returns, in a fixed order.
pub const LABELS: [&str; 7] = [
    LEGIT,
    "device_burst",
    "account_takeover",
    "velocity",
    "under_limit",
    "night_activity",
    MALFORMED,
];

/// Relative weights of the fraud scenarios, as shares of fraud events.
/// They need not sum to one; a zero weight turns a scenario off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScenarioMix {
    pub device_burst: f64,
    pub account_takeover: f64,
    pub velocity: f64,
    pub under_limit: f64,
    pub night_activity: f64,
}

impl Default for ScenarioMix {
    fn default() -> Self {
        ScenarioMix {
            device_burst: 0.25,
            account_takeover: 0.20,
            velocity: 0.25,
            under_limit: 0.15,
            night_activity: 0.15,
        }
    }
}

impl ScenarioMix {
    /// A mix with every weight zero, to fill in with [`ScenarioMix::set`].
    pub fn none() -> ScenarioMix {
        ScenarioMix {
            device_burst: 0.0,
            account_takeover: 0.0,
            velocity: 0.0,
            under_limit: 0.0,
            night_activity: 0.0,
        }
    }

    pub fn get(&self, s: Scenario) -> f64 {
        match s {
            Scenario::DeviceBurst => self.device_burst,
            Scenario::AccountTakeover => self.account_takeover,
            Scenario::Velocity => self.velocity,
            Scenario::UnderLimit => self.under_limit,
            Scenario::NightActivity => self.night_activity,
        }
    }

    pub fn set(&mut self, s: Scenario, weight: f64) {
        match s {
            Scenario::DeviceBurst => self.device_burst = weight,
            Scenario::AccountTakeover => self.account_takeover = weight,
            Scenario::Velocity => self.velocity = weight,
            Scenario::UnderLimit => self.under_limit = weight,
            Scenario::NightActivity => self.night_activity = weight,
        }
    }

    fn total(&self) -> f64 {
        Scenario::ALL.iter().map(|&s| self.get(s)).sum()
    }

    /// The share of fraud events expected from `s`.
    pub fn share(&self, s: Scenario) -> f64 {
        let total = self.total();
        if total > 0.0 {
            self.get(s) / total
        } else {
            0.0
        }
    }
}

impl std::str::FromStr for ScenarioMix {
    type Err = String;

    /// Parses `device_burst=0.4,velocity=0.6`; unlisted scenarios get 0.
    fn from_str(s: &str) -> Result<ScenarioMix, String> {
        let mut mix = ScenarioMix::none();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = part
                .split_once('=')
                .ok_or_else(|| format!("`{part}` is not `scenario=weight`"))?;
            let scenario = Scenario::from_name(name.trim()).ok_or_else(|| {
                format!(
                    "unknown scenario `{}`; the scenarios are {}",
                    name.trim(),
                    Scenario::ALL.map(Scenario::as_str).join(", ")
                )
            })?;
            let weight: f64 = weight
                .trim()
                .parse()
                .map_err(|_| format!("weight `{}` of {name} is not a number", weight.trim()))?;
            if !(weight.is_finite() && weight >= 0.0) {
                return Err(format!("weight of {name} must be zero or more"));
            }
            mix.set(scenario, weight);
        }
        if mix.total() <= 0.0 {
            return Err("at least one scenario needs a weight above zero".into());
        }
        Ok(mix)
    }
}

impl fmt::Display for ScenarioMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in Scenario::ALL.into_iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}={}", s.as_str(), self.get(s))?;
        }
        Ok(())
    }
}

/// 2026-11-01T00:00:00Z.
pub const DEFAULT_START_MS: i64 = 1_793_491_200_000;

/// What to generate. Two equal configurations give the same bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct GenConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// Number of users in the population (at least 1).
    pub users: u32,
    /// Share of lines that belong to a fraud scenario, 0–1.
    pub fraud_rate: f64,
    /// Share of lines that are malformed, 0–1; with `fraud_rate` at most 1.
    pub malformed_rate: f64,
    /// How fraud events divide between the scenarios.
    pub mix: ScenarioMix,
    /// Event time of the start of traffic, milliseconds since the epoch.
    pub start_ms: i64,
    /// Mean events per second of event time (not of wall-clock time).
    pub events_per_sec: f64,
    /// The platform's local time zone, hours east of UTC (−12 to 14); the
    /// daily curve and the night window use local hours.
    pub utc_offset_hours: i32,
    /// Share of events whose timestamp is epoch milliseconds, not RFC 3339.
    pub epoch_ms_share: f64,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 7,
            users: 2_000,
            fraud_rate: 0.02,
            malformed_rate: 0.01,
            mix: ScenarioMix::default(),
            start_ms: DEFAULT_START_MS,
            events_per_sec: 0.25,
            utc_offset_hours: 0,
            epoch_ms_share: 0.03,
        }
    }
}

/// A [`GenConfig`] that cannot be generated from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig(pub String);

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid generator configuration: {}", self.0)
    }
}

impl std::error::Error for InvalidConfig {}

impl GenConfig {
    /// Checks every field; the message says which one and what is allowed.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let bad = |m: String| Err(InvalidConfig(m));
        let share = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
        if self.users == 0 {
            return bad("users must be at least 1".into());
        }
        if !share(self.fraud_rate) {
            return bad(format!(
                "fraud rate {} must be between 0 and 1",
                self.fraud_rate
            ));
        }
        if !share(self.malformed_rate) {
            return bad(format!(
                "malformed rate {} must be between 0 and 1",
                self.malformed_rate
            ));
        }
        if self.fraud_rate + self.malformed_rate > 1.0 {
            return bad("fraud rate plus malformed rate must not exceed 1".into());
        }
        for s in Scenario::ALL {
            let w = self.mix.get(s);
            if !(w.is_finite() && w >= 0.0) {
                return bad(format!("weight of {} must be zero or more", s.as_str()));
            }
        }
        if self.fraud_rate > 0.0 && self.mix.total() <= 0.0 {
            return bad("a fraud rate above zero needs a scenario with a weight above zero".into());
        }
        if !(self.events_per_sec.is_finite() && self.events_per_sec > 0.0) {
            return bad(format!(
                "event rate {} must be above zero",
                self.events_per_sec
            ));
        }
        if !(-12..=14).contains(&self.utc_offset_hours) {
            return bad(format!(
                "UTC offset {} must be between -12 and 14 hours",
                self.utc_offset_hours
            ));
        }
        if !share(self.epoch_ms_share) {
            return bad(format!(
                "epoch-ms share {} must be between 0 and 1",
                self.epoch_ms_share
            ));
        }
        // Leave room for a long run before year 9999.
        if !(0..=200_000_000_000_000).contains(&self.start_ms) {
            return bad("start time must be between 1970 and about 8300".into());
        }
        Ok(())
    }
}

/// One generated line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The event's `user_id`: the Kafka message key. Empty for the few
    /// malformed lines not tied to a user.
    pub key: String,
    /// One JSON line, without the newline.
    pub bytes: Vec<u8>,
    /// `legit`, a scenario name, or `malformed`.
    pub label: &'static str,
}

/// Relative traffic by local hour; normalised to a mean of 1 at start.
const DAILY_CURVE: [f64; 24] = [
    0.45, 0.20, 0.12, 0.10, 0.10, 0.15, 0.35, 0.70, 1.10, 1.35, 1.50, 1.55, 1.60, 1.50, 1.45, 1.45,
    1.50, 1.55, 1.60, 1.70, 1.75, 1.60, 1.20, 0.80,
];

/// The local hours `night_activity` runs in: [1, 5).
const NIGHT: (i64, i64) = (1, 5);

/// What a fresh background arrival turns into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Legit,
    Malformed,
    Fraud(Scenario),
}

const KINDS: [Kind; 7] = [
    Kind::Legit,
    Kind::Malformed,
    Kind::Fraud(Scenario::DeviceBurst),
    Kind::Fraud(Scenario::AccountTakeover),
    Kind::Fraud(Scenario::Velocity),
    Kind::Fraud(Scenario::UnderLimit),
    Kind::Fraud(Scenario::NightActivity),
];

/// A burst event waiting for its time.
#[derive(Debug, Clone, Copy)]
struct Scheduled {
    t_ms: i64,
    seq: u64,
    spec: Spec,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.t_ms, self.seq) == (other.t_ms, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    /// Reversed, so that the max-heap pops the earliest (then the first
    /// scheduled) event.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.t_ms, other.seq).cmp(&(self.t_ms, self.seq))
    }
}

/// What to write next.
enum Item {
    Event(i64, Spec),
    Malformed(i64, Spec),
}

/// The traffic generator: an endless, deterministic stream of labelled
/// event lines.
pub struct Generator {
    config: GenConfig,
    population: Population,
    rng: ChaCha8Rng,
    /// Event time of the next organic arrival, fractional milliseconds.
    next_arrival: f64,
    /// Mean gap in ms at each local hour.
    mean_gap_ms: [f64; 24],
    /// Cumulative choice weights of [`KINDS`] by day and by night.
    day_weights: [f64; 7],
    night_weights: [f64; 7],
    pending: BinaryHeap<Scheduled>,
    seq: u64,
    next_event_id: u64,
    next_device: u32,
    clock: Clock,
    /// User of the last line written (`None` for a line with no user).
    last_user: Option<u32>,
}

/// The RNG stream of the traffic (the population uses another).
const TRAFFIC_STREAM: u64 = 2;

fn cumulative(weights: [f64; 7]) -> [f64; 7] {
    let mut total = 0.0;
    weights.map(|w| {
        total += w.max(0.0);
        total
    })
}

impl Generator {
    /// A generator for `config`.
    ///
    /// # Panics
    /// If the configuration does not pass [`GenConfig::validate`]; use
    /// [`Generator::try_new`] for configurations from users.
    pub fn new(config: GenConfig) -> Generator {
        match Generator::try_new(config) {
            Ok(g) => g,
            Err(e) => panic!("{e}"),
        }
    }

    /// A generator for `config`, or why the configuration is unusable.
    pub fn try_new(config: GenConfig) -> Result<Generator, InvalidConfig> {
        config.validate()?;
        let population = Population::new(config.seed, config.users);
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        rng.set_stream(TRAFFIC_STREAM);

        let mean_curve = DAILY_CURVE.iter().sum::<f64>() / 24.0;
        let mean_gap_ms = DAILY_CURVE.map(|c| 1000.0 / (config.events_per_sec * c / mean_curve));
        let night_share = DAILY_CURVE[NIGHT.0 as usize..NIGHT.1 as usize]
            .iter()
            .sum::<f64>()
            / DAILY_CURVE.iter().sum::<f64>();

        // Weights of event shares per kind, divided by mean burst length, give
        // the probability that an arrival starts that kind of burst: each
        // kind then contributes its configured share of lines.
        //
        // Night activity can only start at night, so by day organic traffic
        // takes its share, and at night night activity takes a share `y` of
        // events from organic traffic. Night arrivals then bring more events
        // each (bursts are longer than one), so `y` is not simply the share
        // divided by the night's share `s` of arrivals: with `W` the total
        // day weight and `L` the mean burst length, night activity's share
        // of all lines is `s·y / (s + (1−s)·(W − y·(1 − 1/L)) / W)`, which
        // equals the configured share `e` for
        // `y = e / (s + e·(1−s)·(1 − 1/L) / W)`.
        let fraud = |s: Scenario| config.fraud_rate * config.mix.share(s);
        let night = fraud(Scenario::NightActivity);
        let legit = 1.0 - config.fraud_rate - config.malformed_rate;
        let weights = |legit: f64, night: f64| {
            KINDS.map(|k| match k {
                Kind::Legit => legit,
                Kind::Malformed => config.malformed_rate,
                Kind::Fraud(Scenario::NightActivity) => night / Scenario::NightActivity.mean_len(),
                Kind::Fraud(s) => fraud(s) / s.mean_len(),
            })
        };
        let day_weights = cumulative(weights(legit + night, 0.0));
        let day_total = day_weights[6];
        let burst = Scenario::NightActivity.mean_len();
        let y =
            night / (night_share + night * (1.0 - night_share) * (1.0 - 1.0 / burst) / day_total);
        let night_weights = cumulative(weights((legit + night - y).max(0.0), y));
        let next_device = population.first_free_device();
        let start = config.start_ms as f64;
        Ok(Generator {
            config,
            population,
            rng,
            next_arrival: start,
            mean_gap_ms,
            day_weights,
            night_weights,
            pending: BinaryHeap::new(),
            seq: 0,
            next_event_id: 1,
            next_device,
            clock: Clock::default(),
            last_user: None,
        })
    }

    pub fn config(&self) -> &GenConfig {
        &self.config
    }

    /// The population the traffic is drawn from, for the profile table.
    pub fn profiles(&self) -> &Population {
        &self.population
    }

    /// Lines written so far.
    pub fn count(&self) -> u64 {
        self.next_event_id - 1
    }

    /// Generates the next line as an owned record (with its Kafka key).
    pub fn next_event(&mut self) -> Generated {
        let mut bytes = Vec::with_capacity(320);
        let label = self.write_next(&mut bytes);
        let key = match self.last_user {
            Some(u) => {
                let mut k = Vec::with_capacity(8);
                json::write_id(&mut k, b"u_", u64::from(u) + 1, 6);
                String::from_utf8(k).unwrap_or_default()
            }
            None => String::new(),
        };
        Generated { key, bytes, label }
    }

    /// Appends the next line (without a newline) to `out` and returns its
    /// label. Allocation-free once `out` has grown to a line's size.
    pub fn write_next(&mut self, out: &mut Vec<u8>) -> &'static str {
        let id = self.next_event_id;
        self.next_event_id += 1;
        match self.next_item() {
            Item::Event(t, spec) => {
                self.last_user = Some(spec.user);
                let form = self.time_form();
                json::write_event(out, &mut self.clock, &spec, id, t, form, Fault::None);
                spec.label
            }
            Item::Malformed(t, spec) => {
                self.write_malformed(out, id, t, &spec);
                MALFORMED
            }
        }
    }

    fn time_form(&mut self) -> TimeForm {
        if self.rng.random_bool(self.config.epoch_ms_share) {
            TimeForm::EpochMs
        } else {
            TimeForm::Rfc3339
        }
    }

    fn local_hour(&self, t_ms: i64) -> i64 {
        (t_ms + i64::from(self.config.utc_offset_hours) * 3_600_000).rem_euclid(86_400_000)
            / 3_600_000
    }

    /// The next thing to write: a scheduled burst event if one is due
    /// before the next organic arrival, else the arrival itself.
    fn next_item(&mut self) -> Item {
        let arrival = self.next_arrival as i64;
        if let Some(top) = self.pending.peek()
            && top.t_ms <= arrival
        {
            let s = self.pending.pop().expect("peeked");
            return Item::Event(s.t_ms, s.spec);
        }
        let hour = self.local_hour(arrival);
        self.next_arrival += sample::exponential(&mut self.rng, self.mean_gap_ms[hour as usize]);
        let weights = if (NIGHT.0..NIGHT.1).contains(&hour) {
            &self.night_weights
        } else {
            &self.day_weights
        };
        let x = self.rng.random::<f64>() * weights[6];
        let kind = KINDS[weights.partition_point(|&w| w <= x).min(6)];
        match kind {
            Kind::Legit => Item::Event(arrival, self.organic(LEGIT)),
            Kind::Malformed => Item::Malformed(arrival, self.organic(MALFORMED)),
            Kind::Fraud(s) => Item::Event(arrival, self.start_burst(s, arrival)),
        }
    }

    fn fresh_device(&mut self) -> u32 {
        self.next_device += 1;
        self.next_device - 1
    }

    fn hosting_ip(&mut self) -> u32 {
        population::ip_in(&mut self.rng, &population::HOSTING)
    }

    fn merchant_in(&mut self, categories: &[u16]) -> u16 {
        let c = categories[self.rng.random_range(0..categories.len())];
        c + 8 * self.rng.random_range(0..MERCHANTS / 8)
    }

    fn term(&mut self) -> u8 {
        sample::weighted(
            &mut self.rng,
            &[(3, 0.15), (6, 0.25), (12, 0.35), (24, 0.15), (36, 0.10)],
        )
    }

    /// An organic event of a user picked by activity.
    fn organic(&mut self, label: &'static str) -> Spec {
        let rng = &mut self.rng;
        let index = self.population.pick_active(rng);
        let user = self.population.user(index);
        let r: f64 = rng.random();
        let kind = if user.profile == Profile::Farm || r < 0.30 {
            EventKind::Login
        } else if r < 0.85 {
            EventKind::Payment
        } else {
            EventKind::LoanApplication
        };
        let new_device = rng.random_bool(0.015);
        let home_device = user.devices[rng.random_range(0..user.devices.len())];
        let r: f64 = rng.random();
        let ip = if r < 0.80 {
            user.home_ip
        } else if r < 0.97 {
            self.population.carrier_ip(rng)
        } else {
            population::ip_in(rng, &population::HOSTING)
        };
        let channel = if rng.random_bool(0.9) {
            user.channel
        } else {
            rng.random_range(0..3)
        };
        let limit_cents = i64::from(user.credit_limit) * 100;
        let amount_cents = match kind {
            EventKind::Login => 0,
            EventKind::Payment => {
                let a = sample::log_normal(rng, user.typical_cents as f64, 0.7);
                (a.round() as i64).clamp(100, limit_cents)
            }
            EventKind::LoanApplication => {
                let a = sample::log_normal(rng, f64::from(user.credit_limit) * 0.25, 0.5);
                let max = (i64::from(user.credit_limit) * 9 / 10 / 500).max(1) * 500;
                (((a / 500.0).round() as i64) * 500).clamp(500, max) * 100
            }
        };
        let merchant = rng.random_range(0..MERCHANTS);
        let term_months = self.term();
        let device = if new_device {
            self.fresh_device()
        } else {
            home_device
        };
        Spec {
            user: index,
            kind,
            device,
            ip,
            amount_cents,
            channel,
            new_device,
            merchant,
            term_months,
            label,
        }
    }

    /// A base event of `user` for a burst, from its home device and IP.
    fn base(&mut self, index: u32, kind: EventKind, label: &'static str) -> Spec {
        let user = self.population.user(index);
        let device = user.devices[0];
        let (ip, channel) = (user.home_ip, user.channel);
        let merchant = self.rng.random_range(0..MERCHANTS);
        let term_months = self.term();
        Spec {
            user: index,
            kind,
            device,
            ip,
            amount_cents: 0,
            channel,
            new_device: false,
            merchant,
            term_months,
            label,
        }
    }

    fn schedule(&mut self, t_ms: i64, spec: Spec) {
        self.seq += 1;
        self.pending.push(Scheduled {
            t_ms,
            seq: self.seq,
            spec,
        });
    }

    /// Builds one burst of scenario `s` starting at `t`: returns its first
    /// event and schedules the rest.
    fn start_burst(&mut self, s: Scenario, t: i64) -> Spec {
        let (lo, hi) = s.burst_len();
        let n = self.rng.random_range(lo..=hi) as usize;
        let label = s.as_str();
        let mut events: Vec<Spec> = Vec::with_capacity(n);
        // Gaps between consecutive events, in ms (min, max).
        let gap: (i64, i64);
        match s {
            Scenario::DeviceBurst => {
                gap = (5_000, 60_000);
                let device = self.fresh_device();
                let ip = self.hosting_ip();
                let channel = self.rng.random_range(0..3);
                let mut used: Vec<u32> = Vec::with_capacity(n);
                for _ in 0..n {
                    let mut index = self.population.pick_farm(&mut self.rng);
                    for _ in 0..8 {
                        if !used.contains(&index) {
                            break;
                        }
                        index = self.population.pick_farm(&mut self.rng);
                    }
                    used.push(index);
                    let mut e = self.base(index, EventKind::LoanApplication, label);
                    let limit = f64::from(self.population.user(index).credit_limit);
                    let a = sample::log_normal(&mut self.rng, limit * 0.5, 0.3).min(limit);
                    e.amount_cents = ((a / 500.0).round().max(1.0) as i64) * 500 * 100;
                    e.device = device;
                    e.ip = ip;
                    e.channel = channel;
                    e.new_device = true;
                    events.push(e);
                }
            }
            Scenario::AccountTakeover => {
                gap = (20_000, 300_000);
                let index = self.population.pick_genuine(&mut self.rng);
                let device = self.fresh_device();
                let ip = self.hosting_ip();
                let user = self.population.user(index);
                let (limit, typical) = (i64::from(user.credit_limit) * 100, user.typical_cents);
                for i in 0..n {
                    let kind = if i == 0 {
                        EventKind::Login
                    } else {
                        EventKind::Payment
                    };
                    let mut e = self.base(index, kind, label);
                    e.device = device;
                    e.ip = ip;
                    e.new_device = true;
                    if kind == EventKind::Payment {
                        let amount = if self.rng.random_bool(0.5) {
                            limit as f64 * self.rng.random_range(0.5..0.95)
                        } else {
                            typical as f64 * self.rng.random_range(5.0..20.0)
                        };
                        e.amount_cents = (amount.round() as i64).clamp(100, limit);
                        // Electronics, travel, gaming: easy to resell.
                        e.merchant = self.merchant_in(&[1, 2, 7]);
                    }
                    events.push(e);
                }
            }
            Scenario::Velocity => {
                gap = (5_000, 90_000);
                let index = self.population.pick_genuine(&mut self.rng);
                let card_testing = self.rng.random_bool(0.5);
                let ip = if self.rng.random_bool(0.5) {
                    self.population.carrier_ip(&mut self.rng)
                } else {
                    self.hosting_ip()
                };
                let typical = self.population.user(index).typical_cents;
                for _ in 0..n {
                    let mut e = self.base(index, EventKind::Payment, label);
                    e.ip = ip;
                    e.amount_cents = if card_testing {
                        self.rng.random_range(100..5_000)
                    } else {
                        (typical as f64 * self.rng.random_range(0.5..2.0)).round() as i64
                    };
                    e.merchant = if card_testing {
                        self.merchant_in(&[4, 7])
                    } else {
                        self.merchant_in(&[1, 6])
                    };
                    events.push(e);
                }
            }
            Scenario::UnderLimit => {
                gap = (60_000, 900_000);
                let index = self.population.pick_genuine(&mut self.rng);
                let limit = i64::from(self.population.user(index).credit_limit);
                for _ in 0..n {
                    let kind = if self.rng.random_bool(0.7) {
                        EventKind::LoanApplication
                    } else {
                        EventKind::Payment
                    };
                    let mut e = self.base(index, kind, label);
                    let thresholds: Vec<i64> = [1_000, 2_000, 5_000, 10_000, 20_000, 50_000]
                        .into_iter()
                        .filter(|&t| t <= limit)
                        .collect();
                    let (ceiling, within) = if thresholds.is_empty() || self.rng.random_bool(0.5) {
                        (limit, 0.02)
                    } else {
                        (
                            thresholds[self.rng.random_range(0..thresholds.len())],
                            0.015,
                        )
                    };
                    let below = (ceiling as f64 * self.rng.random_range(0.001..within) * 100.0)
                        .round() as i64;
                    let cents = ceiling * 100 - below.max(1);
                    // Applications are asked for in whole yuan.
                    e.amount_cents = if kind == EventKind::LoanApplication {
                        cents / 100 * 100
                    } else {
                        cents
                    };
                    events.push(e);
                }
            }
            Scenario::NightActivity => {
                gap = (120_000, 900_000);
                let index = self.population.pick_genuine(&mut self.rng);
                let unusual_ip = self.rng.random_bool(0.5);
                let ip = if unusual_ip { self.hosting_ip() } else { 0 };
                let user = self.population.user(index);
                let (limit, typical) = (i64::from(user.credit_limit) * 100, user.typical_cents);
                for _ in 0..n {
                    let kind = if self.rng.random_bool(0.6) {
                        EventKind::Payment
                    } else {
                        EventKind::LoanApplication
                    };
                    let mut e = self.base(index, kind, label);
                    if unusual_ip {
                        e.ip = ip;
                    }
                    e.amount_cents = match kind {
                        EventKind::Payment => {
                            let a = sample::log_normal(&mut self.rng, typical as f64 * 8.0, 0.4);
                            (a.round() as i64).clamp(100, limit)
                        }
                        _ => {
                            let a = limit as f64 * self.rng.random_range(0.6..1.0);
                            ((a / 100.0).round() as i64) * 100
                        }
                    };
                    events.push(e);
                }
            }
        }
        // Night activity must stay inside the night window: shrink its gaps
        // to fit what is left of it.
        let window_end = if s == Scenario::NightActivity {
            let local = t + i64::from(self.config.utc_offset_hours) * 3_600_000;
            let day_start = local - local.rem_euclid(86_400_000);
            Some(
                day_start + NIGHT.1 * 3_600_000
                    - i64::from(self.config.utc_offset_hours) * 3_600_000
                    - 1,
            )
        } else {
            None
        };
        let mut at = t;
        let mut rest = events.into_iter();
        let first = rest.next().expect("bursts have at least one event");
        let remaining = n as i64 - 1;
        for (i, e) in rest.enumerate() {
            let mut step = self.rng.random_range(gap.0..=gap.1);
            if let Some(end) = window_end {
                let left = remaining - i as i64;
                step = step.min(((end - at) / left).max(0));
            }
            at += step;
            self.schedule(at, e);
        }
        first
    }

    /// Writes a broken line built from `spec`.
    fn write_malformed(&mut self, out: &mut Vec<u8>, id: u64, t: i64, spec: &Spec) {
        self.last_user = Some(spec.user);
        let start = out.len();
        let form = self.time_form();
        let write = |g: &mut Generator, out: &mut Vec<u8>, fault: Fault| {
            json::write_event(out, &mut g.clock, spec, id, t, form, fault);
        };
        match self.rng.random_range(0..6u8) {
            // Truncated: any strict prefix of an object lacks its closing
            // brace, so it is never valid JSON.
            0 => {
                write(self, out, Fault::None);
                let len = out.len() - start;
                let keep = self.rng.random_range(1..len);
                out.truncate(start + keep);
            }
            // Invalid JSON.
            1 => match self.rng.random_range(0..3u8) {
                0 => {
                    write(self, out, Fault::None);
                    for b in &mut out[start..] {
                        if *b == b'"' {
                            *b = b'\'';
                        }
                    }
                }
                1 => {
                    write(self, out, Fault::None);
                    out.insert(out.len() - 1, b',');
                }
                _ => {
                    out.extend_from_slice(b"event_id=");
                    json::write_id(out, b"e-", id, 8);
                    out.extend_from_slice(b"&event_type=");
                    out.extend_from_slice(spec.kind.as_str().as_bytes());
                    out.extend_from_slice(b"&user_id=");
                    json::write_id(out, b"u_", u64::from(spec.user) + 1, 6);
                    out.extend_from_slice(b"&amount=");
                    json::write_cents(out, spec.amount_cents);
                }
            },
            // A required field missing.
            2 => {
                let omit = [
                    Omit::EventId,
                    Omit::EventType,
                    Omit::Timestamp,
                    Omit::UserId,
                ][self.rng.random_range(0..4)];
                write(self, out, Fault::Omit(omit));
            }
            // A field of the wrong type, chosen among those the event has.
            3 => {
                let fault = match (spec.kind, self.rng.random_range(0..3u8)) {
                    (EventKind::Login, 0) | (_, 1) => Fault::NewDeviceAsString,
                    (EventKind::Login, _) | (_, 2) => Fault::UserIdAsNumber,
                    (EventKind::Payment, _) => Fault::AmountAsString,
                    (EventKind::LoanApplication, _) => {
                        if self.rng.random_bool(0.5) {
                            Fault::AmountAsString
                        } else {
                            Fault::TermAsString
                        }
                    }
                };
                write(self, out, fault);
            }
            // A timestamp that is not one.
            4 => {
                const BAD: [&str; 6] = [
                    "\"2026-11-31T08:15:30.250Z\"",
                    "\"2026-13-01T25:61:00Z\"",
                    "\"yesterday\"",
                    "\"01/11/2026 10:00:00\"",
                    "\"\"",
                    "-86400000",
                ];
                let raw = BAD[self.rng.random_range(0..BAD.len())];
                write(self, out, Fault::Timestamp(raw));
            }
            // Not an object.
            _ => match self.rng.random_range(0..4u8) {
                0 => {
                    out.push(b'[');
                    write(self, out, Fault::None);
                    out.push(b']');
                }
                1 => {
                    out.extend_from_slice(b"null");
                    self.last_user = None;
                }
                2 => {
                    out.push(b'"');
                    out.extend_from_slice(spec.kind.as_str().as_bytes());
                    out.push(b'"');
                    self.last_user = None;
                }
                _ => {
                    json::write_cents(out, spec.amount_cents);
                    self.last_user = None;
                }
            },
        }
    }
}

impl Iterator for Generator {
    type Item = Generated;

    /// Endless: every call generates one more line.
    fn next(&mut self) -> Option<Generated> {
        Some(self.next_event())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(config: GenConfig, n: usize) -> Vec<Generated> {
        let mut g = Generator::new(config);
        (0..n).map(|_| g.next_event()).collect()
    }

    #[test]
    fn event_time_never_goes_backwards_and_ids_count_lines() {
        let mut g = Generator::new(GenConfig {
            epoch_ms_share: 1.0,
            malformed_rate: 0.0,
            ..GenConfig::default()
        });
        let mut last = 0i64;
        for i in 1..=20_000u64 {
            let line = g.next_event();
            let v: serde_json::Value = serde_json::from_slice(&line.bytes).unwrap();
            let t = v["timestamp"].as_i64().unwrap();
            assert!(t >= last, "line {i} goes back in time");
            last = t;
            assert_eq!(v["event_id"], format!("e-{i:08}"));
            assert_eq!(v["user_id"], line.key.as_str());
            assert_eq!(v["label"], line.label);
        }
    }

    #[test]
    fn night_activity_happens_at_night_only() {
        let config = GenConfig {
            epoch_ms_share: 1.0,
            malformed_rate: 0.0,
            utc_offset_hours: 8,
            mix: "night_activity=1".parse().unwrap(),
            fraud_rate: 0.1,
            ..GenConfig::default()
        };
        let mut nights = 0;
        for line in lines(config, 30_000) {
            if line.label == "night_activity" {
                let v: serde_json::Value = serde_json::from_slice(&line.bytes).unwrap();
                let local = v["timestamp"].as_i64().unwrap() + 8 * 3_600_000;
                let hour = local.rem_euclid(86_400_000) / 3_600_000;
                assert!((1..5).contains(&hour), "night activity at {hour}:00 local");
                nights += 1;
            }
        }
        assert!(nights > 1_000, "{nights} night events");
    }

    #[test]
    fn device_burst_is_one_device_many_accounts_within_minutes() {
        let config = GenConfig {
            epoch_ms_share: 1.0,
            malformed_rate: 0.0,
            fraud_rate: 0.05,
            mix: "device_burst=1".parse().unwrap(),
            ..GenConfig::default()
        };
        let mut by_device: std::collections::HashMap<String, Vec<(i64, String)>> =
            Default::default();
        for line in lines(config, 20_000) {
            if line.label == "device_burst" {
                let v: serde_json::Value = serde_json::from_slice(&line.bytes).unwrap();
                assert_eq!(v["event_type"], "loan_application");
                assert_eq!(v["attributes"]["new_device"], true);
                by_device
                    .entry(v["device_id"].as_str().unwrap().to_owned())
                    .or_default()
                    .push((v["timestamp"].as_i64().unwrap(), line.key));
            }
        }
        assert!(by_device.len() > 20);
        for events in by_device.values() {
            let span = events.last().unwrap().0 - events[0].0;
            assert!(span <= 14 * 60_000, "burst spans {span} ms");
            let accounts: std::collections::HashSet<_> = events.iter().map(|e| &e.1).collect();
            assert!(
                accounts.len() * 10 >= events.len() * 7,
                "few distinct accounts"
            );
        }
    }

    #[test]
    fn mix_parses_and_rejects() {
        let mix: ScenarioMix = "velocity=2, under_limit=1".parse().unwrap();
        assert_eq!(mix.share(Scenario::Velocity), 2.0 / 3.0);
        assert_eq!(mix.share(Scenario::DeviceBurst), 0.0);
        assert!("nope=1".parse::<ScenarioMix>().is_err());
        assert!("velocity".parse::<ScenarioMix>().is_err());
        assert!("velocity=-1".parse::<ScenarioMix>().is_err());
        assert!("velocity=0".parse::<ScenarioMix>().is_err());
        let text = ScenarioMix::default().to_string();
        assert_eq!(text.parse::<ScenarioMix>().unwrap(), ScenarioMix::default());
    }

    #[test]
    fn invalid_configs_are_refused_with_the_field_named() {
        let bad = |c: GenConfig| Generator::try_new(c).err().unwrap().to_string();
        assert!(
            bad(GenConfig {
                fraud_rate: 1.5,
                ..GenConfig::default()
            })
            .contains("fraud rate")
        );
        assert!(
            bad(GenConfig {
                users: 0,
                ..GenConfig::default()
            })
            .contains("users")
        );
        assert!(
            bad(GenConfig {
                events_per_sec: 0.0,
                ..GenConfig::default()
            })
            .contains("event rate")
        );
    }

    #[test]
    fn tiny_population_works() {
        for line in lines(
            GenConfig {
                users: 1,
                fraud_rate: 0.3,
                ..GenConfig::default()
            },
            2_000,
        ) {
            assert!(!line.bytes.is_empty());
            assert!(!line.bytes.contains(&b'\n'));
        }
    }
}
