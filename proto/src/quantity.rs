//! Kubernetes resource quantities (`500m`, `2.007`, `128Mi`, `1e3`), parsed
//! exactly: a decimal mantissa, then a binary suffix (Ki..Ei), a decimal
//! one (n, u, m, k, M..E) or an exponent (e3, E-2). No floating point, so
//! `2.007` CPU is 2007m, never 2008m; a value finer than the unit asked for
//! rounds up, as Kubernetes rounds it.

use std::fmt;
use std::str::FromStr;

/// A parsed quantity, held as an exact fraction `num / den`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    num: i128,
    den: i128,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")]
    Syntax,
    #[error("quantity is too large")]
    TooLarge,
}

fn pow(base: i128, exp: u32) -> Result<i128, QuantityError> {
    base.checked_pow(exp).ok_or(QuantityError::TooLarge)
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Quantity, QuantityError> {
        let s = s.trim();
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (mantissa, suffix) = rest.split_at(split);
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty() || frac.contains('.') {
            return Err(QuantityError::Syntax);
        }
        if int.len() + frac.len() > 30 {
            return Err(QuantityError::TooLarge);
        }
        let digits: i128 = format!("{int}{frac}")
            .parse()
            .map_err(|_| QuantityError::Syntax)?;
        let mut num = digits;
        let mut den = pow(10, frac.len() as u32)?;
        let (mul, div) = match suffix {
            "" => (1, 1),
            "Ki" => (pow(2, 10)?, 1),
            "Mi" => (pow(2, 20)?, 1),
            "Gi" => (pow(2, 30)?, 1),
            "Ti" => (pow(2, 40)?, 1),
            "Pi" => (pow(2, 50)?, 1),
            "Ei" => (pow(2, 60)?, 1),
            "n" => (1, pow(10, 9)?),
            "u" => (1, pow(10, 6)?),
            "m" => (1, 1000),
            "k" => (1000, 1),
            "M" => (pow(10, 6)?, 1),
            "G" => (pow(10, 9)?, 1),
            "T" => (pow(10, 12)?, 1),
            "P" => (pow(10, 15)?, 1),
            "E" => (pow(10, 18)?, 1),
            e if e.starts_with(['e', 'E']) => {
                let exp: i32 = e[1..].parse().map_err(|_| QuantityError::Syntax)?;
                if exp.unsigned_abs() > 30 {
                    return Err(QuantityError::TooLarge);
                }
                let p = pow(10, exp.unsigned_abs())?;
                if exp >= 0 {
                    (p, 1)
                } else {
                    (1, p)
                }
            }
            _ => return Err(QuantityError::Syntax),
        };
        num = num.checked_mul(mul).ok_or(QuantityError::TooLarge)?;
        den = den.checked_mul(div).ok_or(QuantityError::TooLarge)?;
        if negative {
            num = -num;
        }
        Ok(Quantity { num, den })
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && (a > 0) == (b > 0) {
        q + 1
    } else {
        q
    }
}

impl Quantity {
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        s.parse()
    }

    /// In thousandths of the unit (millicores for CPU), rounded up.
    pub fn millis(&self) -> i128 {
        self.num
            .checked_mul(1000)
            .map(|n| div_ceil(n, self.den))
            .unwrap_or(i128::MAX)
    }

    /// In whole units (bytes for memory), rounded up.
    pub fn value(&self) -> i128 {
        div_ceil(self.num, self.den)
    }

    pub fn is_negative(&self) -> bool {
        self.num < 0
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.millis();
        if m % 1000 == 0 {
            write!(f, "{}", m / 1000)
        } else {
            write!(f, "{m}m")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_are_exact() {
        let q = |s: &str| Quantity::parse(s).unwrap();
        assert_eq!(q("2.007").millis(), 2007);
        assert_eq!(q("100m").millis(), 100);
        assert_eq!(q("0.1").millis(), 100);
        assert_eq!(q("1").millis(), 1000);
        assert_eq!(q("1.0001").millis(), 1001, "finer than a milli rounds up");
        assert_eq!(q("128Mi").value(), 128 << 20);
        assert_eq!(q("1.5Gi").value(), 3 << 29);
        assert_eq!(q("1G").value(), 1_000_000_000);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("5E-1").millis(), 500);
        assert_eq!(q("250000u").millis(), 250);
        assert_eq!(q("+3k").value(), 3000);
        assert_eq!(q(".5").millis(), 500);
        assert!(q("-1").is_negative());
        for bad in ["", "abc", "1.2.3", "12Q", "1Mi2", "--1", "1e", "."] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(Quantity::parse("1Ei").unwrap().value(), 1 << 60);
        assert_eq!(
            Quantity::parse("999999999999999999999999999999Ei"),
            Err(QuantityError::TooLarge)
        );
    }
}
