//! The synthetic population: users with their devices, home IP, spending
//! habits, credit limit and batch profile.
//!
//! A population depends only on the seed and the number of users, never on
//! the traffic options, so `verdict gen profiles` and `verdict gen` with the
//! same `--seed` and `--users` describe the same people.

use std::io::{self, Write};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::sample;

/// The RNG stream the population is drawn from; traffic uses another, so
/// that changing traffic options never changes who the users are.
const POPULATION_STREAM: u64 = 1;

/// How a user behaves; it shapes activity and profile, and is not written to
/// the profile table (a risk engine does not get to see it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A few events a week.
    Casual,
    /// About one event a day.
    Regular,
    /// Several events a day.
    Heavy,
    /// A recently registered account controlled by a fraud ring: almost no
    /// organic activity, used in `device_burst` application farms.
    Farm,
}

impl Profile {
    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Casual => "casual",
            Profile::Regular => "regular",
            Profile::Heavy => "heavy",
            Profile::Farm => "farm",
        }
    }

    /// Relative share of organic traffic.
    fn activity(self) -> f64 {
        match self {
            Profile::Casual => 0.4,
            Profile::Regular => 1.0,
            Profile::Heavy => 3.0,
            Profile::Farm => 0.05,
        }
    }
}

/// One user of the platform.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    /// 1-based number; the user id is `u_` and six digits of it.
    pub number: u32,
    pub profile: Profile,
    /// Home devices (one or two), as device numbers (`d_` and six digits).
    pub devices: Vec<u32>,
    /// Home IP address, IPv4 as a number.
    pub home_ip: u32,
    /// Median payment, in cents.
    pub typical_cents: i64,
    /// Credit limit in CNY.
    pub credit_limit: u32,
    pub account_age_days: u32,
    pub prior_defaults: u8,
    /// Preferred channel, an index into [`CHANNELS`](super::CHANNELS).
    pub channel: u8,
}

/// Everyone, and the tables used to pick users quickly.
#[derive(Debug, Clone)]
pub struct Population {
    users: Vec<User>,
    /// Cumulative activity, for picking the user of an organic event.
    cumulative_activity: Vec<f64>,
    /// Indices of farm accounts.
    farm: Vec<u32>,
    /// Indices of everyone else.
    genuine: Vec<u32>,
    /// Shared mobile-carrier gateway addresses (many users behind each).
    carrier_ips: Vec<u32>,
    /// The first device number not used by any home device.
    first_free_device: u32,
}

/// Residential broadband prefixes (first two octets) of home addresses.
const RESIDENTIAL: [[u8; 2]; 10] = [
    [36, 112],
    [58, 33],
    [111, 192],
    [112, 64],
    [113, 88],
    [116, 228],
    [117, 136],
    [120, 229],
    [121, 35],
    [183, 14],
];

/// Mobile-carrier gateway prefixes.
const CARRIER: [[u8; 2]; 4] = [[39, 144], [223, 104], [117, 136], [120, 244]];

/// Hosting and proxy prefixes: where fraud traffic and a few travelling or
/// VPN-using genuine users come from.
pub(crate) const HOSTING: [[u8; 2]; 6] = [
    [45, 32],
    [103, 152],
    [185, 220],
    [194, 26],
    [47, 74],
    [8, 210],
];

const CREDIT_LIMITS: [(u32, f64); 8] = [
    (3_000, 0.10),
    (5_000, 0.18),
    (8_000, 0.15),
    (10_000, 0.20),
    (15_000, 0.12),
    (20_000, 0.12),
    (30_000, 0.08),
    (50_000, 0.05),
];

pub(crate) fn ip_in(rng: &mut impl Rng, prefixes: &[[u8; 2]]) -> u32 {
    let [a, b] = prefixes[rng.random_range(0..prefixes.len())];
    let c: u8 = rng.random();
    let d: u8 = rng.random_range(1..=254);
    u32::from_be_bytes([a, b, c, d])
}

impl Population {
    /// Draws `users` users from `seed`. `users` must be at least 1.
    pub fn new(seed: u64, users: u32) -> Population {
        let users = users.max(1);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(POPULATION_STREAM);
        let mut next_device = 1u32;
        let mut list = Vec::with_capacity(users as usize);
        for number in 1..=users {
            let r: f64 = rng.random();
            let profile = if r < 0.45 {
                Profile::Casual
            } else if r < 0.85 {
                Profile::Regular
            } else if r < 0.97 {
                Profile::Heavy
            } else {
                Profile::Farm
            };
            let n_devices = if rng.random_bool(0.3) { 2 } else { 1 };
            let devices = (0..n_devices)
                .map(|_| {
                    next_device += 1;
                    next_device - 1
                })
                .collect();
            let home_ip = ip_in(&mut rng, &RESIDENTIAL);
            let typical = sample::log_normal(&mut rng, 200.0, 0.8).clamp(10.0, 3_000.0);
            let (account_age_days, credit_limit, prior_defaults) = if profile == Profile::Farm {
                let limit = if rng.random_bool(0.5) { 3_000 } else { 5_000 };
                (rng.random_range(0..=30), limit, 0)
            } else {
                let age = sample::log_normal(&mut rng, 500.0, 1.0).clamp(31.0, 4_000.0) as u32;
                let limit = sample::weighted(&mut rng, &CREDIT_LIMITS);
                let r: f64 = rng.random();
                let defaults = if r < 0.90 {
                    0
                } else if r < 0.98 {
                    1
                } else {
                    2
                };
                (age, limit, defaults)
            };
            let r: f64 = rng.random();
            let channel = if r < 0.6 {
                0
            } else if r < 0.85 {
                1
            } else {
                2
            };
            list.push(User {
                number,
                profile,
                devices,
                home_ip,
                typical_cents: (typical * 100.0).round() as i64,
                credit_limit,
                account_age_days,
                prior_defaults,
                channel,
            });
        }
        let carrier_ips = (0..64).map(|_| ip_in(&mut rng, &CARRIER)).collect();
        let mut total = 0.0;
        let cumulative_activity = list
            .iter()
            .map(|u| {
                total += u.profile.activity();
                total
            })
            .collect();
        let (farm, genuine): (Vec<u32>, Vec<u32>) =
            (0..users).partition(|&i| list[i as usize].profile == Profile::Farm);
        Population {
            users: list,
            cumulative_activity,
            farm,
            genuine,
            carrier_ips,
            first_free_device: next_device,
        }
    }

    pub fn users(&self) -> &[User] {
        &self.users
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub(crate) fn user(&self, index: u32) -> &User {
        &self.users[index as usize]
    }

    /// The first device number no home device uses; new devices count up
    /// from here.
    pub(crate) fn first_free_device(&self) -> u32 {
        self.first_free_device
    }

    /// A user for an organic event, weighted by activity.
    pub(crate) fn pick_active(&self, rng: &mut impl Rng) -> u32 {
        let total = *self.cumulative_activity.last().unwrap_or(&1.0);
        let x = rng.random::<f64>() * total;
        let i = self.cumulative_activity.partition_point(|&c| c <= x);
        i.min(self.users.len() - 1) as u32
    }

    /// A genuine (non-farm) user, uniformly: a victim or a misbehaving
    /// customer.
    pub(crate) fn pick_genuine(&self, rng: &mut impl Rng) -> u32 {
        if self.genuine.is_empty() {
            return rng.random_range(0..self.users.len() as u32);
        }
        self.genuine[rng.random_range(0..self.genuine.len())]
    }

    /// An account for an application farm: mostly farm accounts, some
    /// genuine ones whose identity was stolen.
    pub(crate) fn pick_farm(&self, rng: &mut impl Rng) -> u32 {
        if !self.farm.is_empty() && rng.random_bool(0.7) {
            self.farm[rng.random_range(0..self.farm.len())]
        } else {
            self.pick_genuine(rng)
        }
    }

    pub(crate) fn carrier_ip(&self, rng: &mut impl Rng) -> u32 {
        self.carrier_ips[rng.random_range(0..self.carrier_ips.len())]
    }

    /// Writes the batch profile table: `user_id,account_age_days,credit_limit,prior_defaults`.
    pub fn write_csv(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(b"user_id,account_age_days,credit_limit,prior_defaults\n")?;
        for u in &self.users {
            writeln!(
                out,
                "u_{:06},{},{},{}",
                u.number, u.account_age_days, u.credit_limit, u.prior_defaults
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_people() {
        let a = Population::new(7, 500);
        let b = Population::new(7, 500);
        assert_eq!(a.users(), b.users());
        let c = Population::new(8, 500);
        assert_ne!(a.users(), c.users());
    }

    #[test]
    fn home_devices_are_unique_and_below_the_free_range() {
        let p = Population::new(1, 1000);
        let mut seen = std::collections::HashSet::new();
        for u in p.users() {
            assert!(!u.devices.is_empty() && u.devices.len() <= 2);
            for &d in &u.devices {
                assert!(seen.insert(d), "device {d} shared");
                assert!(d < p.first_free_device());
            }
        }
    }

    #[test]
    fn csv_has_one_row_per_user() {
        let p = Population::new(3, 50);
        let mut out = Vec::new();
        p.write_csv(&mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 51);
        assert_eq!(
            lines[0],
            "user_id,account_age_days,credit_limit,prior_defaults"
        );
        assert!(lines[1].starts_with("u_000001,"));
        assert!(lines[50].starts_with("u_000050,"));
    }
}
