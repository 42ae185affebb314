//! Converters for attribute and text values. Each returns the message only; the caller knows
//! the element and position and builds the error.

use std::net::IpAddr;

/// libvirt's canonical uuid form: lowercase 8-4-4-4-12. libvirt also accepts uppercase and
/// dashes anywhere between digits (or none), so we do too.
pub fn canonical_uuid(value: &str) -> Result<String, String> {
    let digits: String = value.trim().chars().filter(|&c| c != '-').collect();
    if digits.len() != 32 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "invalid uuid '{value}' (expected 32 hexadecimal digits, as in 6695eb01-f6a4-8304-79aa-97f2502e193f)"
        ));
    }
    let d = digits.to_ascii_lowercase();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &d[0..8],
        &d[8..12],
        &d[12..16],
        &d[16..20],
        &d[20..32]
    ))
}

/// A fresh random uuid in canonical form.
pub fn generate_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A MAC address in lowercase `aa:bb:cc:dd:ee:ff` form (libvirt accepts one or two hex digits
/// per byte). `unicast` refuses multicast addresses, which libvirt rejects for NICs.
pub fn canonical_mac(value: &str, unicast: bool) -> Result<String, String> {
    let bad = || {
        format!(
            "invalid MAC address '{value}' (expected six hexadecimal bytes separated by ':', as in 52:54:00:12:34:56)"
        )
    };
    let parts: Vec<&str> = value.trim().split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut bytes = [0u8; 6];
    for (byte, part) in bytes.iter_mut().zip(&parts) {
        if part.is_empty() || part.len() > 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if unicast && bytes[0] & 1 == 1 {
        return Err(format!(
            "MAC address '{value}' is multicast (expected a unicast address: the first byte must be even)"
        ));
    }
    Ok(format_mac(&bytes))
}

fn format_mac(bytes: &[u8; 6]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A random MAC in the QEMU/KVM prefix 52:54:00, as libvirt generates for NICs without one.
pub fn generate_mac() -> String {
    let random = uuid::Uuid::new_v4();
    let r = random.as_bytes();
    format_mac(&[0x52, 0x54, 0x00, r[0], r[1], r[2]])
}

/// One of a fixed set of words, mapped to a value. The error lists every allowed word.
pub fn parse_enum<T: Copy>(value: &str, table: &[(&str, T)], what: &str) -> Result<T, String> {
    table
        .iter()
        .find(|(name, _)| *name == value)
        .map(|&(_, v)| v)
        .ok_or_else(|| {
            format!(
                "unknown {what} '{value}' (expected one of {})",
                names(table)
            )
        })
}

/// The word for a value; tables are complete for their enum, so a miss is a programming error
/// and yields an empty string rather than a panic.
pub fn enum_name<T: PartialEq>(table: &[(&'static str, T)], value: &T) -> &'static str {
    table
        .iter()
        .find(|(_, v)| v == value)
        .map_or("", |(name, _)| name)
}

/// The words of a table, comma-separated, for messages.
pub fn names<T>(table: &[(&str, T)]) -> String {
    table.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

/// A word that must be one of `allowed`, kept as a string in the model.
pub fn one_of(value: &str, allowed: &[&str], what: &str) -> Result<String, String> {
    if allowed.contains(&value) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "unknown {what} '{value}' (expected one of {})",
            allowed.join(", ")
        ))
    }
}

/// `yes`/`no`.
pub fn yes_no(value: &str) -> Result<bool, String> {
    match value {
        "yes" => Ok(true),
        "no" => Ok(false),
        _ => Err(format!("invalid value '{value}' (expected yes or no)")),
    }
}

/// `on`/`off`.
pub fn on_off(value: &str) -> Result<bool, String> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("invalid value '{value}' (expected on or off)")),
    }
}

/// A decimal unsigned 32-bit integer.
pub fn u32_value(value: &str) -> Result<u32, String> {
    value.trim().parse().map_err(|_| {
        format!(
            "invalid value '{value}' (expected an integer from 0 to {})",
            u32::MAX
        )
    })
}

/// A decimal signed 32-bit integer.
pub fn i32_value(value: &str) -> Result<i32, String> {
    value.trim().parse().map_err(|_| {
        format!(
            "invalid value '{value}' (expected an integer from {} to {})",
            i32::MIN,
            i32::MAX
        )
    })
}

/// A decimal unsigned 32-bit integer that must not be zero.
pub fn positive_u32(value: &str) -> Result<u32, String> {
    match value.trim().parse::<u32>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "invalid value '{value}' (expected an integer from 1 to {})",
            u32::MAX
        )),
    }
}

/// A permission mode, written in octal as libvirt does.
pub fn octal_mode(value: &str) -> Result<u32, String> {
    match u32::from_str_radix(value.trim(), 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err(format!(
            "invalid mode '{value}' (expected an octal number from 0 to 0777)"
        )),
    }
}

/// A uid or gid; `-1` (or its unsigned form 4294967295, `(uid_t)-1`) means "not set".
pub fn owner_id(value: &str) -> Result<Option<u32>, String> {
    let trimmed = value.trim();
    if trimmed == "-1" {
        return Ok(None);
    }
    trimmed
        .parse()
        .map(|id| (id != u32::MAX).then_some(id))
        .map_err(|_| {
            format!(
                "invalid id '{value}' (expected an integer from 0 to {}, or -1)",
                u32::MAX
            )
        })
}

/// An IPv4 or IPv6 address.
pub fn ip_address(value: &str) -> Result<IpAddr, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("invalid IP address '{value}'"))
}

/// The prefix length of a dotted IPv4 netmask; the ones must be contiguous.
pub fn netmask_prefix(value: &str) -> Result<u32, String> {
    let bad =
        || format!("invalid netmask '{value}' (expected contiguous ones, as in 255.255.255.0)");
    let addr: std::net::Ipv4Addr = value.trim().parse().map_err(|_| bad())?;
    let bits = u32::from(addr);
    let prefix = bits.leading_ones();
    if bits.checked_shl(prefix).unwrap_or(0) != 0 {
        return Err(bad());
    }
    Ok(prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_canonicalised() {
        let canon = "6695eb01-f6a4-8304-79aa-97f2502e193f";
        assert_eq!(canonical_uuid(canon).unwrap(), canon);
        assert_eq!(
            canonical_uuid("6695EB01F6A4830479AA97F2502E193F").unwrap(),
            canon
        );
        assert_eq!(
            canonical_uuid("6695eb01-f6a48304-79aa97f2-502e193f").unwrap(),
            canon
        );
        assert_eq!(
            canonical_uuid("not-a-uuid").unwrap_err(),
            "invalid uuid 'not-a-uuid' (expected 32 hexadecimal digits, as in 6695eb01-f6a4-8304-79aa-97f2502e193f)"
        );
        let fresh = generate_uuid();
        assert_eq!(canonical_uuid(&fresh).unwrap(), fresh);
    }

    #[test]
    fn macs_are_canonicalised_and_generated_in_the_qemu_prefix() {
        assert_eq!(
            canonical_mac("52:54:00:AA:b:0c", true).unwrap(),
            "52:54:00:aa:0b:0c"
        );
        assert!(canonical_mac("52:54:00:aa:bb", true).is_err());
        assert!(canonical_mac("52:54:00:aa:bb:xyz", true).is_err());
        assert_eq!(
            canonical_mac("01:00:5e:00:00:01", true).unwrap_err(),
            "MAC address '01:00:5e:00:00:01' is multicast (expected a unicast address: the first byte must be even)"
        );
        let mac = generate_mac();
        assert!(mac.starts_with("52:54:00:"), "{mac}");
        assert_eq!(canonical_mac(&mac, true).unwrap(), mac);
    }

    #[test]
    fn enums_list_their_values() {
        let table = [("a", 1), ("b", 2)];
        assert_eq!(parse_enum("b", &table, "thing"), Ok(2));
        assert_eq!(
            parse_enum("c", &table, "thing").unwrap_err(),
            "unknown thing 'c' (expected one of a, b)"
        );
        assert_eq!(enum_name(&table, &1), "a");
    }

    #[test]
    fn numbers_and_masks() {
        assert_eq!(u32_value("7"), Ok(7));
        assert_eq!(
            u32_value("4294967296").unwrap_err(),
            "invalid value '4294967296' (expected an integer from 0 to 4294967295)"
        );
        assert_eq!(
            positive_u32("0").unwrap_err(),
            "invalid value '0' (expected an integer from 1 to 4294967295)"
        );
        assert_eq!(octal_mode("0755"), Ok(0o755));
        assert_eq!(
            octal_mode("0999").unwrap_err(),
            "invalid mode '0999' (expected an octal number from 0 to 0777)"
        );
        assert_eq!(owner_id("-1"), Ok(None));
        assert_eq!(owner_id("0744"), Ok(Some(744)));
        assert_eq!(netmask_prefix("255.255.255.0"), Ok(24));
        assert_eq!(netmask_prefix("0.0.0.0"), Ok(0));
        assert_eq!(netmask_prefix("255.255.255.255"), Ok(32));
        assert_eq!(
            netmask_prefix("255.0.255.0").unwrap_err(),
            "invalid netmask '255.0.255.0' (expected contiguous ones, as in 255.255.255.0)"
        );
    }
}
