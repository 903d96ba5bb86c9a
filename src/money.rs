//! Money as exact integers: micro-dollars (1e-6 USD) everywhere in the
//! ledger, the database and the API's arithmetic (SPEC §12). Amounts cross
//! the API as JSON numbers with up to six decimals, read and written from
//! their decimal text, never through a float.

use serde::de::{self, Deserializer};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

/// Micro-dollars in one dollar.
pub const MICROS: i64 = 1_000_000;

/// The largest amount accepted: a trillion dollars, far below `i64::MAX`
/// micro-dollars, so that sums of many amounts cannot overflow.
pub const MAX_MICROS: i64 = 1_000_000_000_000 * MICROS;

/// Reads a decimal amount of dollars (`"12"`, `"0.000001"`, `"-3.5"`, or
/// with an exponent, `"1e-06"` as Python's `json.dumps` writes small
/// amounts) into micro-dollars, exactly. Refuses more than six decimals and
/// amounts beyond [`MAX_MICROS`].
pub fn parse_usd(text: &str) -> Result<i64, String> {
    let bad = || not_an_amount(text);
    let (neg, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let shifted;
    let digits = match unsigned.find(['e', 'E']) {
        Some(at) => {
            shifted = without_exponent(&unsigned[..at], &unsigned[at + 1..]).ok_or_else(bad)?;
            shifted.as_str()
        }
        None => unsigned,
    };
    let v = parse_unsigned(digits, text)?;
    Ok(if neg { -v } else { v })
}

fn not_an_amount(text: &str) -> String {
    format!("{text:?} is not an amount of US dollars with at most 6 decimals (for example 12.5)")
}

/// `mantissa` × 10^`exponent` written without the exponent, by moving the
/// decimal point in the text (no float on the way); `None` if either part is
/// not a number or the exponent is beyond any amount that could be accepted.
fn without_exponent(mantissa: &str, exponent: &str) -> Option<String> {
    let exp: i32 = exponent.parse().ok().filter(|e: &i32| e.abs() <= 40)?;
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let all = format!("{whole}{frac}");
    let point = whole.len() as i32 + exp;
    Some(if point <= 0 {
        format!("0.{}{all}", "0".repeat((-point) as usize))
    } else if point as usize >= all.len() {
        format!("{all}{}", "0".repeat(point as usize - all.len()))
    } else {
        let (w, f) = all.split_at(point as usize);
        format!("{w}.{f}")
    })
}

/// Reads `digits` (no sign, no exponent) into micro-dollars; errors quote
/// `text`, the amount as given.
fn parse_unsigned(digits: &str, text: &str) -> Result<i64, String> {
    let bad = || not_an_amount(text);
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || digits.ends_with('.') && frac.is_empty() && whole.is_empty()
    {
        return Err(bad());
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > 6 {
        return Err(format!(
            "{text:?} has more than 6 decimals; amounts are kept to the micro-dollar"
        ));
    }
    let whole = whole.trim_start_matches('0');
    if whole.len() > 13 {
        return Err(format!("{text:?} is too large"));
    }
    let w: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let f: i64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<6}").parse().map_err(|_| bad())?
    };
    let v = w * MICROS + f;
    if v > MAX_MICROS {
        return Err(format!("{text:?} is too large"));
    }
    Ok(v)
}

/// Writes micro-dollars as a decimal amount of dollars with no trailing
/// zeros: `12.5`, `0.000001`, `3`.
pub fn format_usd(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let m = micros.unsigned_abs();
    let (whole, frac) = (m / MICROS as u64, m % MICROS as u64);
    if frac == 0 {
        return format!("{sign}{whole}");
    }
    let f = format!("{frac:06}");
    format!("{sign}{whole}.{}", f.trim_end_matches('0'))
}

/// Micro-dollars that serialize as a JSON number of dollars (`12.5`) and
/// deserialize from one (or from a string holding one), exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Usd(pub i64);

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // A raw JSON number: serde_json would print 1e-6 for a float.
        let raw = serde_json::value::RawValue::from_string(format_usd(self.0))
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Usd, D::Error> {
        // The number's own text, so that 0.1 is read as written.
        let raw = <Box<serde_json::value::RawValue>>::deserialize(d)?;
        let t = raw.get();
        let t = match t.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            Some(inner) => inner.trim(),
            None => t,
        };
        if t == "null" {
            return Err(de::Error::custom("an amount may not be null here"));
        }
        parse_usd(t).map(Usd).map_err(de::Error::custom)
    }
}

/// Serializes micro-dollars as a JSON number of dollars (`serialize_with`).
pub fn ser_usd<S: Serializer>(micros: &i64, s: S) -> Result<S::Ok, S::Error> {
    Usd(*micros).serialize(s)
}

/// Micro-dollars of `tokens` at `per_mtok` dollars per million tokens,
/// rounded up to the micro-dollar (a dollar per million tokens is exactly a
/// micro-dollar per token).
pub fn cost_micros(tokens: i64, per_mtok_pico: i64) -> i64 {
    // per_mtok_pico: pico-dollars per token (dollars per million tokens × 1e6).
    let p = tokens.max(0) as i128 * per_mtok_pico.max(0) as i128;
    let m = (p + (MICROS as i128 - 1)) / MICROS as i128;
    m.min(MAX_MICROS as i128) as i64
}

/// A price in dollars per million tokens (as configured or listed, a float)
/// as pico-dollars per token, rounded to the nearest.
pub fn pico_per_token(usd_per_mtok: f64) -> i64 {
    if !usd_per_mtok.is_finite() || usd_per_mtok <= 0.0 {
        return 0;
    }
    (usd_per_mtok * 1e6).round().min(1e15) as i64
}

/// An upstream's reported cost in dollars, as micro-dollars (nearest).
pub fn micros_of_usd(usd: f64) -> i64 {
    if !usd.is_finite() || usd <= 0.0 {
        return 0;
    }
    (usd * MICROS as f64).round().min(MAX_MICROS as f64) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_read_and_written_exactly() {
        for (text, micros) in [
            ("12", 12_000_000),
            ("12.5", 12_500_000),
            ("0.000001", 1),
            ("-3.25", -3_250_000),
            ("0.1", 100_000),
            ("007.010000", 7_010_000),
            (".5", 500_000),
            ("1e-06", 1),
            ("1E-6", 1),
            ("2.5e1", 25_000_000),
            ("-1.5e-3", -1_500),
            ("1e3", 1_000_000_000),
            ("0.0000001e1", 1),
            ("5e+0", 5_000_000),
        ] {
            assert_eq!(parse_usd(text), Ok(micros), "{text}");
        }
        for bad in [
            "",
            ".",
            "1e-7",
            "1e",
            "e3",
            "1e3.5",
            "1e99999999999",
            "1e40",
            "1e-40",
            "0.0000001",
            "abc",
            "1.2.3",
            "--1",
            "1 000",
            "99999999999999",
        ] {
            assert!(parse_usd(bad).is_err(), "{bad}");
        }
        assert_eq!(format_usd(12_500_000), "12.5");
        assert_eq!(format_usd(1), "0.000001");
        assert_eq!(format_usd(-3_250_000), "-3.25");
        assert_eq!(format_usd(0), "0");
        assert_eq!(serde_json::to_string(&Usd(1)).unwrap(), "0.000001");
        assert_eq!(serde_json::from_str::<Usd>("0.1").unwrap(), Usd(100_000));
        assert_eq!(
            serde_json::from_str::<Usd>("\"2.5\"").unwrap(),
            Usd(2_500_000)
        );
        assert_eq!(serde_json::from_str::<Usd>("1e-06").unwrap(), Usd(1));
        assert!(serde_json::from_str::<Usd>("1e-7").is_err());
        assert!(serde_json::from_str::<Usd>("null").is_err());
    }

    #[test]
    fn costs_round_up_to_the_micro_dollar() {
        // $0.15 per million tokens: 0.15 micro-dollars a token.
        let p = pico_per_token(0.15);
        assert_eq!(p, 150_000);
        assert_eq!(cost_micros(10, p), 2);
        assert_eq!(cost_micros(1_000_000, p), 150_000);
        assert_eq!(cost_micros(0, p), 0);
        assert_eq!(micros_of_usd(0.000123), 123);
    }
}
