//! The byte form of an entity's portable states and of feature values:
//! what a snapshot row holds, and what the shared store keeps in Redis of
//! what each event read (and of an entity's `last` values).
//!
//! Little-endian, length-prefixed, versioned by whoever stores it (the
//! snapshot's fingerprint, the shared store's key). Decoding reads bytes
//! that may be damaged or written by another program: every length is
//! checked and a malformed input is `None`, never a panic.
//!
//! Not here: where the bytes go (files, Redis), checksums.

use verdict_core::Value;

use crate::defs::BUCKETS;
use crate::entity::{EXACT_DISTINCT, HLL_REGISTERS};
use crate::window::{Distinct, Ring, State};

/// One entity's portable states.
pub(crate) struct EntityState {
    pub last_seen: i64,
    pub states: Vec<State>,
}

fn put_i64(b: &mut Vec<u8>, x: i64) {
    b.extend_from_slice(&x.to_le_bytes());
}

/// Appends `v` to `b`.
pub(crate) fn put_value(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Missing => b.push(0),
        Value::Number(x) => {
            b.push(1);
            b.extend_from_slice(&x.to_le_bytes());
        }
        Value::String(s) => {
            b.push(2);
            b.extend_from_slice(&(s.len() as u32).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        Value::Bool(x) => {
            b.push(3);
            b.push(u8::from(*x));
        }
        Value::Timestamp(x) => {
            b.push(4);
            put_i64(b, *x);
        }
    }
}

/// Appends an entity's states (with the time of its newest event) to `b`.
pub(crate) fn encode_states(last_seen: i64, states: &[State], b: &mut Vec<u8>) {
    put_i64(b, last_seen);
    for st in states {
        match st {
            State::Ring(r) => {
                b.push(0);
                put_i64(b, r.head);
                for c in r.count {
                    b.extend_from_slice(&c.to_le_bytes());
                }
                for x in r.sum.iter().chain(&r.ext) {
                    b.extend_from_slice(&x.to_le_bytes());
                }
            }
            State::Distinct(d) => {
                // 1: with the sketch's registers; 4: the exact list alone.
                b.push(if d.registers.is_some() { 1 } else { 4 });
                put_i64(b, d.head);
                put_i64(b, d.inexact_until);
                b.push(d.exact.len() as u8);
                for (h, t) in &d.exact {
                    b.extend_from_slice(&h.to_le_bytes());
                    put_i64(b, *t);
                }
                for regs in d.registers.iter().flat_map(|r| r.iter()) {
                    b.extend_from_slice(regs);
                }
            }
            State::Last { value, at } => {
                b.push(2);
                put_i64(b, *at);
                put_value(b, value);
            }
            State::Since { at } => {
                b.push(3);
                put_i64(b, *at);
            }
        }
    }
}

/// Appends `values` to `b`.
pub(crate) fn encode_values(values: &[Value], b: &mut Vec<u8>) {
    for v in values {
        put_value(b, v);
    }
}

/// Reads what the functions here write, checking every length.
pub(crate) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader(bytes)
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(a)
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    pub(crate) fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn f64(&mut self) -> Option<f64> {
        Some(f64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub(crate) fn value(&mut self) -> Option<Value> {
        Some(match self.u8()? {
            0 => Value::Missing,
            1 => Value::Number(self.f64()?),
            2 => {
                let n = self.u32()? as usize;
                Value::String(std::str::from_utf8(self.take(n)?).ok()?.into())
            }
            3 => Value::Bool(self.u8()? != 0),
            4 => Value::Timestamp(self.i64()?),
            _ => return None,
        })
    }
}

/// The `n_states` states encoded in `bytes`, which they fill exactly.
pub(crate) fn decode_states(bytes: &[u8], n_states: usize) -> Option<EntityState> {
    let mut r = Reader(bytes);
    let last_seen = r.i64()?;
    let mut states = Vec::with_capacity(n_states.min(bytes.len()));
    for _ in 0..n_states {
        let st = match r.u8()? {
            0 => {
                let mut ring = Ring {
                    head: r.i64()?,
                    ..Ring::default()
                };
                for c in ring.count.iter_mut() {
                    *c = r.u32()?;
                }
                for x in ring.sum.iter_mut() {
                    *x = r.f64()?;
                }
                for x in ring.ext.iter_mut() {
                    *x = r.f64()?;
                }
                State::Ring(ring)
            }
            tag @ (1 | 4) => {
                let mut d = Distinct {
                    head: r.i64()?,
                    inexact_until: r.i64()?,
                    ..Distinct::default()
                };
                let n = r.u8()? as usize;
                if n > EXACT_DISTINCT {
                    return None;
                }
                for _ in 0..n {
                    let h = u64::from_le_bytes(r.take(8)?.try_into().ok()?);
                    d.exact.push((h, r.i64()?));
                }
                if tag == 1 {
                    let mut regs = Box::new([[0; HLL_REGISTERS]; BUCKETS]);
                    for row in regs.iter_mut() {
                        let n = row.len();
                        row.copy_from_slice(r.take(n)?);
                    }
                    d.registers = Some(regs);
                }
                State::Distinct(d)
            }
            2 => {
                let at = r.i64()?;
                let value = r.value()?;
                State::Last { value, at }
            }
            3 => State::Since { at: r.i64()? },
            _ => return None,
        };
        states.push(st);
    }
    r.0.is_empty().then_some(EntityState { last_seen, states })
}

/// The `n` values encoded in `bytes`, into `out`; false (with `out` as it
/// was) when `bytes` are not exactly `n` values.
pub(crate) fn decode_values(bytes: &[u8], n: usize, out: &mut Vec<Value>) -> bool {
    let mut r = Reader(bytes);
    let start = out.len();
    for _ in 0..n {
        match r.value() {
            Some(v) => out.push(v),
            None => {
                out.truncate(start);
                return false;
            }
        }
    }
    if !r.0.is_empty() {
        out.truncate(start);
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_damage_is_refused() {
        let values = [
            Value::Missing,
            Value::Number(-1.5),
            Value::String("ключ".into()),
            Value::Bool(true),
            Value::Timestamp(1_700_000_000_000),
        ];
        let mut b = Vec::new();
        encode_values(&values, &mut b);
        let mut out = vec![Value::Number(9.0)];
        assert!(decode_values(&b, values.len(), &mut out));
        assert_eq!(out[1..], values);
        // Cut short, one value too many or too few: refused, `out` unchanged.
        for (bytes, n) in [(&b[..b.len() - 1], 5), (&b[..], 4), (&b[..], 6)] {
            let mut out = vec![Value::Number(9.0)];
            assert!(!decode_values(bytes, n, &mut out), "{n} values");
            assert_eq!(out, [Value::Number(9.0)]);
        }
    }

    #[test]
    fn an_exact_list_longer_than_the_store_keeps_is_refused() {
        let d = Distinct {
            exact: (0..EXACT_DISTINCT as u64 + 1).map(|h| (h, 0)).collect(),
            ..Distinct::default()
        };
        let mut b = Vec::new();
        encode_states(0, &[State::Distinct(d)], &mut b);
        assert!(decode_states(&b, 1).is_none());
    }
}
