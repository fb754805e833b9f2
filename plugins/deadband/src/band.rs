//! One tag's deadband: how far a value may move from the last reported one
//! before it is reported again.

use omh_sdk::Value;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandSettings {
    absolute: Option<f64>,
    percent: Option<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Band {
    /// Reported when `|new - last| > width`; 0 means any change.
    Absolute(f64),
    /// Reported when `|new - last| > |last| * fraction`.
    Relative(f64),
}

impl Band {
    pub fn new(settings: BandSettings) -> Result<Self, String> {
        let check = |name: &str, width: f64| {
            if width.is_finite() && width >= 0.0 {
                Ok(width)
            } else {
                Err(format!(
                    "`{name}` is {width}; a band is a finite number >= 0"
                ))
            }
        };
        match (settings.absolute, settings.percent) {
            (Some(_), Some(_)) => Err("give `absolute` or `percent`, not both".to_string()),
            (Some(width), None) => Ok(Self::Absolute(check("absolute", width)?)),
            (None, Some(percent)) => Ok(Self::Relative(check("percent", percent)? / 100.0)),
            (None, None) => Ok(Self::Absolute(0.0)),
        }
    }

    /// Whether `new` is outside the band around `last`. Values that are not
    /// both numbers (booleans, text, a type change) count when they differ.
    pub fn exceeded(&self, last: &Value, new: &Value) -> bool {
        let (Some(last), Some(new)) = (number(last), number(new)) else {
            return last != new;
        };
        let width = match self {
            Self::Absolute(width) => *width,
            Self::Relative(fraction) => last.abs() * fraction,
        };
        let distance = (new - last).abs();
        // A NaN on either side is a change too.
        distance.is_nan() || distance > width
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Boolean(_) | Value::Text(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Value::{Boolean, Float, Int, Text};

    #[test]
    fn exceeded_compares_numbers_by_width_and_the_rest_by_equality() {
        let cases = [
            (Band::Absolute(0.5), Float(1.0), Float(1.5), false),
            (Band::Absolute(0.5), Float(1.0), Float(0.4), true),
            (Band::Absolute(0.0), Int(3), Float(3.0), false),
            (Band::Absolute(0.0), Int(3), Int(4), true),
            (Band::Relative(0.1), Int(-100), Int(-110), false),
            (Band::Relative(0.1), Int(-100), Int(-111), true),
            (Band::Absolute(1.0), Float(1.0), Float(f64::NAN), true),
            (Band::Absolute(1.0), Boolean(true), Boolean(true), false),
            (Band::Absolute(1.0), Boolean(true), Boolean(false), true),
            (
                Band::Absolute(1.0),
                Text("a".into()),
                Text("b".into()),
                true,
            ),
            (Band::Absolute(1.0), Int(1), Text("1".into()), true),
        ];
        for (band, last, new, expected) in cases {
            assert_eq!(
                band.exceeded(&last, &new),
                expected,
                "{band:?}: {last:?} -> {new:?}"
            );
        }
    }
}
