//! libvirt's scaled integers (`<memory unit='GiB'>4</memory>`, `<capacity unit='G'>5</capacity>`).
//!
//! The rules are libvirt's `virScaleInteger`: units are case-insensitive, a bare letter or
//! `<letter>iB` is a power of 1024, `<letter>B` a power of 1000, and `b`/`byte`/`bytes` is 1.

/// The unit names as libvirt documents them, listed in errors.
pub const UNIT_NAMES: &str =
    "b, bytes, KB, k, KiB, MB, M, MiB, GB, G, GiB, TB, T, TiB, PB, P, PiB, EB, E, EiB";

/// Bytes per `unit`, or `None` when libvirt would not accept the unit.
pub fn unit_scale(unit: &str) -> Option<u64> {
    let lower = unit.to_ascii_lowercase();
    if matches!(lower.as_str(), "b" | "byte" | "bytes") {
        return Some(1);
    }
    let mut chars = lower.chars();
    let letter = chars.next()?;
    let rest = chars.as_str();
    let base: u64 = match rest {
        "" | "ib" => 1024,
        "b" => 1000,
        _ => return None,
    };
    let power = match letter {
        'k' => 1,
        'm' => 2,
        'g' => 3,
        't' => 4,
        'p' => 5,
        'e' => 6,
        _ => return None,
    };
    Some(base.pow(power))
}

/// A scaled value in bytes. `default_scale` applies when no unit is given (1024 for memory,
/// whose unit defaults to KiB; 1 for storage sizes). Errors are the message only; the caller
/// adds the position.
pub fn parse_scaled(
    value: &str,
    unit: Option<&str>,
    default_scale: u64,
) -> Result<u64, ScaleError> {
    let scale = match unit {
        None => default_scale,
        Some(u) => unit_scale(u).ok_or(ScaleError::Unit)?,
    };
    let trimmed = value.trim();
    let number: u64 = if trimmed.bytes().all(|b| b.is_ascii_digit()) && !trimmed.is_empty() {
        trimmed.parse().map_err(|_| ScaleError::TooLarge)?
    } else {
        return Err(ScaleError::Number);
    };
    number.checked_mul(scale).ok_or(ScaleError::TooLarge)
}

/// Why a scaled value was refused; [`ScaleError::message`] words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleError {
    /// The unit is not one libvirt knows.
    Unit,
    /// The value is not a non-negative integer.
    Number,
    /// The value does not fit in 64 bits of bytes.
    TooLarge,
}

impl ScaleError {
    /// The message for a value `value` written with `unit`.
    pub fn message(self, value: &str, unit: Option<&str>) -> String {
        match self {
            ScaleError::Unit => format!(
                "unknown unit '{}' (expected one of {UNIT_NAMES})",
                unit.unwrap_or_default()
            ),
            ScaleError::Number => {
                format!(
                    "invalid value '{}' (expected a non-negative integer)",
                    value.trim()
                )
            }
            ScaleError::TooLarge => format!(
                "value '{}'{} is too large (at most {} bytes)",
                value.trim(),
                unit.map(|u| format!(" {u}")).unwrap_or_default(),
                u64::MAX
            ),
        }
    }
}

/// Bytes to KiB, rounding up as libvirt does for memory sizes.
pub fn bytes_to_kib(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_unit_scales_as_libvirt() {
        let cases: &[(&str, u64)] = &[
            ("b", 1),
            ("bytes", 1),
            ("byte", 1),
            ("KB", 1000),
            ("k", 1024),
            ("KiB", 1024),
            ("MB", 1_000_000),
            ("M", 1 << 20),
            ("MiB", 1 << 20),
            ("GB", 1_000_000_000),
            ("G", 1 << 30),
            ("GiB", 1 << 30),
            ("TB", 1_000_000_000_000),
            ("T", 1 << 40),
            ("TiB", 1 << 40),
            ("PB", 1_000_000_000_000_000),
            ("P", 1 << 50),
            ("PiB", 1 << 50),
            ("EB", 1_000_000_000_000_000_000),
            ("E", 1 << 60),
            ("EiB", 1 << 60),
            ("kib", 1024),
            ("gb", 1_000_000_000),
        ];
        for (unit, scale) in cases {
            assert_eq!(unit_scale(unit), Some(*scale), "unit {unit}");
        }
        for bad in ["furlongs", "", "KiBB", "x", "Kb2", "ZiB"] {
            assert_eq!(unit_scale(bad), None, "unit {bad}");
        }
    }

    #[test]
    fn values_scale_and_round_to_kib() {
        assert_eq!(parse_scaled("4", Some("GiB"), 1024), Ok(4 << 30));
        assert_eq!(parse_scaled(" 1024 ", None, 1024), Ok(1 << 20));
        assert_eq!(parse_scaled("5", None, 1), Ok(5));
        assert_eq!(bytes_to_kib(1), 1);
        assert_eq!(bytes_to_kib(2048), 2);
        assert_eq!(bytes_to_kib(2049), 3);
        assert_eq!(bytes_to_kib(0), 0);
    }

    #[test]
    fn bad_values_are_named() {
        let e = parse_scaled("1", Some("furlongs"), 1024).unwrap_err();
        assert_eq!(
            e.message("1", Some("furlongs")),
            "unknown unit 'furlongs' (expected one of b, bytes, KB, k, KiB, MB, M, MiB, GB, G, GiB, TB, T, TiB, PB, P, PiB, EB, E, EiB)"
        );
        let e = parse_scaled("-1", None, 1024).unwrap_err();
        assert_eq!(
            e.message("-1", None),
            "invalid value '-1' (expected a non-negative integer)"
        );
        assert_eq!(parse_scaled("1.5", Some("G"), 1), Err(ScaleError::Number));
        let e = parse_scaled("16", Some("EiB"), 1).unwrap_err();
        assert_eq!(
            e.message("16", Some("EiB")),
            "value '16' EiB is too large (at most 18446744073709551615 bytes)"
        );
        assert_eq!(
            parse_scaled("99999999999999999999999", None, 1),
            Err(ScaleError::TooLarge)
        );
    }
}
