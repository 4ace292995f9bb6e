//! Number → text the way the server's scripting does it: `fpconv_dtoa` (shortest round-trip digits, printed
//! plainly when short enough, else in `e` notation) and the integer shortcut `server.call` applies first.

/// The server's `fpconv_dtoa` layout over the shortest round-trip digits of `v`.
pub fn dtoa(v: f64) -> String {
    let mut out = String::new();
    if v.is_sign_negative() {
        out.push('-');
    }
    if v.is_nan() {
        out.push_str("nan");
        return out;
    }
    if v.is_infinite() {
        out.push_str("inf");
        return out;
    }
    if v == 0.0 {
        out.push('0');
        return out;
    }
    // Rust prints the shortest digits that round-trip: `d.ddddde<exp>`.
    let sci = format!("{:e}", v.abs());
    let (mant, exp) = sci.split_once('e').expect("exponent");
    let exp: i32 = exp.parse().expect("exponent digits");
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let ndigits = digits.len() as i32;
    // K: the power of ten of the last digit.
    let k = exp - (ndigits - 1);
    emit_digits(&digits, ndigits, k, v.is_sign_negative(), &mut out);
    out
}

fn emit_digits(digits: &str, ndigits: i32, k: i32, neg: bool, out: &mut String) {
    let exp = (k + ndigits - 1).abs();
    if k >= 0 && exp < ndigits + 7 {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', k as usize));
        return;
    }
    if k < 0 && (k > -7 || exp < 4) {
        let offset = ndigits - k.abs();
        if offset <= 0 {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-offset) as usize));
            out.push_str(digits);
        } else {
            out.push_str(&digits[..offset as usize]);
            out.push('.');
            out.push_str(&digits[offset as usize..]);
        }
        return;
    }
    let nd = ndigits.min(18 - neg as i32) as usize;
    out.push_str(&digits[..1]);
    if nd > 1 {
        out.push('.');
        out.push_str(&digits[1..nd]);
    }
    out.push('e');
    out.push(if k + ndigits - 1 < 0 { '-' } else { '+' });
    out.push_str(&exp.to_string());
}

/// How `server.call` turns a Lua number argument into a command argument.
pub fn lua_number_arg(v: f64) -> String {
    const LIMIT: f64 = (i64::MAX / 2) as f64;
    if v.fract() == 0.0 && v > -LIMIT && v < LIMIT {
        format!("{}", v as i64)
    } else {
        dtoa(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_examples() {
        for (v, s) in [
            (3.5, "3.5"),
            (1e20, "1e+20"),
            (0.1, "0.1"),
            (-0.0, "0"),
            (100000000.0, "100000000"),
            (2f64.powi(63), "9223372036854776000"),
            (2f64.powi(64), "18446744073709552000"),
            (1e21, "1e+21"),
            (1e16, "10000000000000000"),
            (123456789012345678.0, "123456789012345680"),
            (1.5e300, "1.5e+300"),
            (1e-5, "0.00001"),
            (1e-7, "1e-7"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1e15 + 0.5, "1000000000000000.5"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(lua_number_arg(v), s, "{v:e}");
        }
        assert_eq!(lua_number_arg(-f64::NAN), "-nan");
        assert_eq!(lua_number_arg(f64::NAN), "nan");
    }
}
