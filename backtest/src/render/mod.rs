//! Renderings of a [`crate::Report`]: a table for the terminal and one
//! self-contained HTML page. (The JSON is [`crate::Report::to_json`].)

pub mod html;
pub mod text;

/// `1234567` → `1,234,567`.
pub(crate) fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `0.01234` → `1.23%`.
pub(crate) fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

pub(crate) fn opt_pct(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_owned(), pct)
}

/// `-1234567.891` → `-1,234,567.89`.
pub(crate) fn money(x: f64) -> String {
    let cents = (x.abs() * 100.0).round() as u64;
    let sign = if x < 0.0 && cents > 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", count(cents / 100), cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(pct(0.012345), "1.23%");
        assert_eq!(money(-1_234_567.891), "-1,234,567.89");
        assert_eq!(money(0.004), "0.00");
    }
}
