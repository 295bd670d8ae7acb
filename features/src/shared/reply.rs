//! The script's reply, parsed: untrusted bytes from the network, so every
//! length is checked and a malformed reply is an error, never a panic.
//!
//! The reply is `F` (first delivery) or `D` (redelivery), then one item per
//! feature: `m` for missing, or a tag, the payload's length in decimal, `:`
//! and the payload. Tags: `n` a number, `v` a typed `last` value (`n`, `s`,
//! `b` or `t`, then the value), `h` a sketch read (the exact count, `,`,
//! then the 64 registers merged over the window).

use verdict_core::Value;

use crate::defs::Agg;
use crate::entity::{HLL_REGISTERS, hll_estimate};

/// Largest payload length accepted (its digits are bounded too).
const MAX_ITEM: usize = 1 << 20;

/// What is wrong with a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// The reply is not a string of items.
    #[error("expected the script's reply, got {0}")]
    Shape(String),
    /// An item that does not parse.
    #[error("item {item}: {message}")]
    Item { item: usize, message: String },
    /// More or fewer items than the kind has features.
    #[error("{got} items for {want} features")]
    Count { got: usize, want: usize },
    /// Over the reply size bound.
    #[error("a reply of {0} bytes is over the bound")]
    TooLarge(usize),
}

/// The values one entity operation read, one per feature (`aggs`, in the
/// kind's order), and whether the event was a redelivery.
pub fn parse_reply(bytes: &[u8], aggs: &[Agg]) -> Result<Vec<Value>, ReplyError> {
    let (first, mut rest) = match bytes.split_first() {
        Some((b'F' | b'D', rest)) => (bytes[0], rest),
        _ => return Err(ReplyError::Shape("no F or D at the start".into())),
    };
    let _ = first;
    let mut out = Vec::with_capacity(aggs.len());
    let mut item = 0;
    while let Some((&tag, after)) = rest.split_first() {
        let bad = |message: &str| ReplyError::Item {
            item,
            message: message.to_owned(),
        };
        if tag == b'm' {
            out.push(Value::Missing);
            rest = after;
            item += 1;
            continue;
        }
        let colon = after
            .iter()
            .take(8)
            .position(|&b| b == b':')
            .ok_or_else(|| bad("no length"))?;
        let len: usize = std::str::from_utf8(&after[..colon])
            .ok()
            .and_then(|s| s.parse().ok())
            .filter(|&n| n <= MAX_ITEM)
            .ok_or_else(|| bad("a bad length"))?;
        let payload = after
            .get(colon + 1..colon + 1 + len)
            .ok_or_else(|| bad("cut short"))?;
        rest = &after[colon + 1 + len..];
        let value = match tag {
            b'n' => Value::Number(number(payload).ok_or_else(|| bad("not a number"))?),
            b'v' => last(payload).ok_or_else(|| bad("not a typed value"))?,
            b'h' => {
                let comma = payload
                    .iter()
                    .position(|&b| b == b',')
                    .ok_or_else(|| bad("a sketch without its exact count"))?;
                let exact = number(&payload[..comma]).ok_or_else(|| bad("a bad exact count"))?;
                let regs: &[u8; HLL_REGISTERS] = payload[comma + 1..]
                    .try_into()
                    .map_err(|_| bad("a sketch of the wrong size"))?;
                Value::Number(hll_estimate(regs, exact))
            }
            _ => return Err(bad("an unknown tag")),
        };
        out.push(value);
        item += 1;
    }
    if out.len() != aggs.len() {
        return Err(ReplyError::Count {
            got: out.len(),
            want: aggs.len(),
        });
    }
    Ok(out)
}

fn number(b: &[u8]) -> Option<f64> {
    let x: f64 = std::str::from_utf8(b).ok()?.parse().ok()?;
    x.is_finite().then_some(x)
}

fn last(b: &[u8]) -> Option<Value> {
    let (&t, rest) = b.split_first()?;
    let text = std::str::from_utf8(rest).ok()?;
    Some(match t {
        b'n' => Value::Number(number(rest)?),
        b's' => Value::String(text.into()),
        b'b' => Value::Bool(match text {
            "1" => true,
            "0" => false,
            _ => return None,
        }),
        b't' => Value::Timestamp(text.parse().ok()?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_reads_every_item_kind() {
        let mut r = b"Fn1:3m".to_vec();
        r.extend_from_slice(b"v6:sd_001");
        r.extend_from_slice(format!("h{}:2,", 2 + HLL_REGISTERS).as_bytes());
        r.extend_from_slice(&[0; HLL_REGISTERS]);
        let aggs = [Agg::Count, Agg::Min, Agg::Last, Agg::DistinctCount];
        let v = parse_reply(&r, &aggs).unwrap();
        assert_eq!(v[0], Value::Number(3.0));
        assert_eq!(v[1], Value::Missing);
        assert_eq!(v[2], Value::String("d_001".into()));
        // Empty registers estimate 0; never below the exact count.
        assert_eq!(v[3], Value::Number(2.0));
    }

    #[test]
    fn malformed_replies_are_errors() {
        let aggs = [Agg::Count];
        for bad in [
            &b""[..],
            b"X",
            b"Fn",
            b"Fn9:1",
            b"Fn1:x",
            b"Fn99999999999:1",
            b"Fq1:1",
            b"Fn1:1n1:2",
            b"Fh3:1,2",
            b"Fv2:q1",
            b"F",
        ] {
            assert!(
                parse_reply(bad, &aggs).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
