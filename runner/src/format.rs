//! Text forms of values, shared by every step that writes values as text, and the bound on
//! untrusted text the runner prints.

use std::borrow::Cow;
use std::fmt::Write;

/// The longest text from outside the runner's control (a plugin's error message or log line)
/// that it prints or stores in one piece, in bytes.
pub const MESSAGE_BYTES: usize = 4096;

/// `text`, or its first [`MESSAGE_BYTES`] (at a character boundary) and how much was cut:
/// `...... (N bytes cut)`.
pub fn cut(text: &str) -> Cow<'_, str> {
    if text.len() <= MESSAGE_BYTES {
        return text.into();
    }
    let mut end = MESSAGE_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes cut)", &text[..end], text.len() - end).into()
}

/// `url` for messages, whatever it holds, with what may be a secret masked: the user information
/// after the user name (it runs from `://` to the last `@`: a password may hold `/`, `@`, `?` or
/// `#`), and the query's values (`?pass=` carries a socket URL's password) but for `db` and
/// `protocol`; a socket path's query (`redis+unix:///run/redis.sock?...`) whole. Text without
/// `://` (a path) is shown as it is.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let path = rest.split_once('?').map_or(rest, |(path, _)| path);
    if rest.starts_with('/') && !path.contains('@') {
        // A path, no user information: the query begins at the first `?`.
        return if path.len() < rest.len() { format!("{scheme}://{path}?***") } else { url.to_string() };
    }
    let (user, after) = match rest.rsplit_once('@') {
        Some((userinfo, after)) => match userinfo.split_once(':') {
            Some((user, _)) => (format!("{user}:***@"), after),
            // No `:`: a user name alone, or a password written without one; masked either way.
            None => ("***@".to_string(), after),
        },
        None => (String::new(), rest),
    };
    let after = match after.split_once('?') {
        Some((before, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((key @ ("db" | "protocol"), value)) => format!("{key}={value}"),
                    Some((key, _)) => format!("{key}=***"),
                    None => "***".to_string(),
                })
                .collect();
            format!("{before}?{}", pairs.join("&"))
        }
        None => after.to_string(),
    };
    format!("{scheme}://{user}{after}")
}

/// The texts pandas's `read_csv` takes for a missing value by default (its `na_values`), matched
/// exactly, spaces included: an empty field, `NA`, `NaN`, `null`, `None`, ...
const NA_TEXTS: [&str; 19] = [
    "", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA",
    "NULL", "NaN", "None", "n/a", "nan", "null",
];

/// Whether a field of text is a missing value, as pandas reads it.
pub fn is_na(text: &str) -> bool {
    text.len() <= 8 && NA_TEXTS.contains(&text)
}

/// A boolean as pandas reads one: `True`, `TRUE`, `true` and the same for false, nothing else
/// (no spaces around it).
pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "True" | "TRUE" | "true" => Some(true),
        "False" | "FALSE" | "false" => Some(false),
        _ => None,
    }
}

/// A number's text without the spaces pandas accepts around it.
pub fn number_text(text: &str) -> &str {
    text.trim_matches([' ', '\t'])
}

/// [`cut`], for an owned string.
pub fn cut_owned(text: String) -> String {
    match cut(&text) {
        Cow::Borrowed(_) => text,
        Cow::Owned(short) => short,
    }
}

/// Writes `x` as Python's `repr(float)` / `str(float)` does: the shortest text that reads back
/// as the same float, with a `.0` on integral values, scientific notation when the decimal
/// exponent is below -4 or at least 16 (`1e-05`, `1e+16`), and `nan`, `inf`, `-inf`.
///
/// Row keys must match the original Python flow byte for byte, and CSV output keeps floats
/// recognisable as floats (`5.0`, not `5`) when read back.
pub fn write_python_float(out: &mut String, x: f64) {
    if x.is_nan() {
        out.push_str("nan");
        return;
    }
    if x.is_infinite() {
        out.push_str(if x > 0.0 { "inf" } else { "-inf" });
        return;
    }
    // The shortest digits that read back as `x`; among several, the closest to `x`, ties to
    // even, as CPython's dtoa does. (Rust's own `{:e}` breaks such ties upwards:
    // 1000000000000000.25 is `...0.2` in Python but `...0.3` in Rust.) Ryu follows Python.
    let mut buffer = ryu::Buffer::new();
    let text = buffer.format_finite(x);
    // Most values: ryu's text is Python's (`5.1`, `5.0`, `0.0001`, `1000000000000000.0`). They
    // differ when ryu uses an exponent (`1e16`, `1e-7`: Python writes `1e+16`, `1e-07`) and
    // from 1e-5 down to where ryu switches (`0.00001`: Python writes `1e-05`).
    let digits_start = usize::from(x.is_sign_negative());
    if !text.as_bytes().contains(&b'e') && !text[digits_start..].starts_with("0.0000") {
        out.push_str(text);
        return;
    }
    let mut scratch = [0u8; 32];
    let (negative, digits, exponent) = decompose(text, &mut scratch);
    if negative {
        out.push('-');
    }
    // Python's repr switches to scientific notation when the point would be placed more than
    // 16 digits right of the first digit or 4 or more zeros left of it.
    let point = exponent + 1;
    if !(-4 < point && point <= 16) {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exponent < 0 { '-' } else { '+' };
        write!(out, "e{sign}{:02}", exponent.abs()).expect("writing to a String cannot fail");
    } else if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-point) as usize));
        out.push_str(digits);
    } else if (point as usize) < digits.len() {
        out.push_str(&digits[..point as usize]);
        out.push('.');
        out.push_str(&digits[point as usize..]);
    } else {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', point as usize - digits.len()));
        out.push_str(".0");
    }
}

/// Splits ryu's text (`-1.25e-7`, `123.45`, `0.001`) into sign, significant digits (no leading
/// or trailing zeros; `"0"` for zero, written into `scratch`: no allocation per value) and the
/// decimal exponent of the first digit.
fn decompose<'a>(text: &str, scratch: &'a mut [u8; 32]) -> (bool, &'a str, i32) {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().expect("ryu writes integer exponents")),
        None => (text, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut len = 0;
    for &b in int.as_bytes().iter().chain(frac.as_bytes()) {
        scratch[len] = b;
        len += 1;
    }
    let all = &scratch[..len];
    let leading = all.iter().take_while(|&&b| b == b'0').count();
    let trailing = all[leading..].iter().rev().take_while(|&&b| b == b'0').count();
    let digits = std::str::from_utf8(&scratch[leading..len - trailing]).expect("ASCII digits");
    if digits.is_empty() {
        return (negative, "0", 0);
    }
    // The first significant digit sits at 10^(len(int) - 1 - leading + exponent).
    (negative, digits, int.len() as i32 - 1 - leading as i32 + exponent)
}

/// [`write_python_float`] with a memory of the values it wrote last. Tabular data repeats its
/// values (a measurement has few distinct readings: a million generated Iris rows have 250-550
/// per column), and a value seen before costs a comparison and a copy instead of formatting.
/// Direct-mapped: 1024 slots by a hash of the bits, each holding the last value and its text.
pub struct PythonFloats {
    slots: Vec<(u64, String)>,
}

impl Default for PythonFloats {
    fn default() -> PythonFloats {
        // NaN is written without the memory, so these bits (a NaN's) never match a value.
        PythonFloats { slots: vec![(u64::MAX, String::new()); 1024] }
    }
}

impl PythonFloats {
    /// Appends Python's text of `x` to `out`, exactly as [`write_python_float`].
    pub fn write(&mut self, out: &mut String, x: f64) {
        if x.is_nan() {
            out.push_str("nan");
            return;
        }
        let bits = x.to_bits();
        let slot = &mut self.slots[(bits.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54) as usize];
        if slot.0 != bits {
            slot.0 = bits;
            slot.1.clear();
            write_python_float(&mut slot.1, x);
        }
        out.push_str(&slot.1);
    }
}

#[cfg(test)]
mod tests {
    use super::{MESSAGE_BYTES, cut, write_python_float};

    fn python_float(x: f64) -> String {
        let mut s = String::new();
        write_python_float(&mut s, x);
        s
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        assert_eq!(cut("short"), "short");
        let long = "é".repeat(MESSAGE_BYTES); // two bytes each
        let cut = cut(&long);
        assert!(cut.ends_with(&format!("... ({} bytes cut)", MESSAGE_BYTES)), "{}", &cut[cut.len() - 40..]);
        assert!(cut.len() < MESSAGE_BYTES + 40);
    }

    #[test]
    fn the_memory_writes_what_the_formatter_writes() {
        // Values twice over (hits), more than there are slots (collisions and replacements).
        let values: Vec<f64> =
            (0..5000).map(|i| (i % 3000) as f64 * 0.37 - 500.0).chain([f64::NAN, -0.0, 0.0, 1e-5, 1e16]).collect();
        let mut memory = super::PythonFloats::default();
        for &x in values.iter().chain(&values) {
            let mut text = String::new();
            memory.write(&mut text, x);
            assert_eq!(text, python_float(x), "{x:?}");
        }
    }

    #[test]
    fn matches_python_repr() {
        // Pairs printed by CPython 3.11's `repr`.
        let cases = [
            (5.0, "5.0"),
            (5.1, "5.1"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (0.1, "0.1"),
            (1e-4, "0.0001"),
            (1e-5, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (123456.789, "123456.789"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345e16, "1.2345e+16"),
            (9999999999999998.0, "9999999999999998.0"),
            (0.30000000000000004, "0.30000000000000004"),
            (1e300, "1e+300"),
            (-2.5e-300, "-2.5e-300"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::NAN, "nan"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (x, want) in cases {
            assert_eq!(python_float(x), want, "{x:?}");
        }
    }
}
