//! Sizes as docker and dd users write them: a number, a fraction if
//! wanted, and `k`, `m`, `g`, `t` or `p`, optionally followed by `i`, `b`
//! or `ib`, in any case (`1.5g`, `512MiB`, `2GB`). Powers of 1024, as
//! docker's `units.RAMInBytes` reads them for `run -m` and `--mount
//! tmpfs-size`. Here, below the command line, so that `vmshare run -m`,
//! `vmshare image build --size` and the docker front end's `tmpfs-size`
//! read one syntax (the front end refused `64MiB`, `64mb`, `1.5g` and
//! `1t`, which docker takes).

/// The bytes `text` says; the error says what is wrong, for the caller to
/// prefix with the option's name.
pub fn parse_bytes(text: &str) -> Result<u64, &'static str> {
    let t = text.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite())
        .ok_or("not a size; write e.g. 512m, 1.5g or 2GiB")?;
    let unit = unit.trim();
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err("unknown unit; use k, m, g, t or p"),
    };
    let bytes = (n * 2f64.powi(shift)).floor();
    if bytes >= 2f64.powi(63) {
        return Err("too large");
    }
    // Finite, not negative (no sign is read) and below 2^63 just above:
    // the conversion is exact.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn docker_sizes() {
        assert_eq!(parse_bytes("512m"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5G"), Ok(3 << 29));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1T"), Ok(1 << 40));
        assert_eq!(parse_bytes("1p"), Ok(1 << 50));
        assert_eq!(parse_bytes("64mb"), Ok(64 << 20));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        for bad in ["", "x", "-1g", "nan", "2Q", "1e999"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }
}
