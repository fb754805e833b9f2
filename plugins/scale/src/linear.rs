//! One tag's linear map, from either form users know: Neuron/Telegraf's
//! `scale` (factor) and `offset`, or Node-RED/Telegraf's range mapping
//! (`input = [raw_min, raw_max]`, `output = [eng_min, eng_max]`).

use serde::Deserialize;

/// Most decimals a result may be rounded to: beyond 15, f64 has no more.
const MAX_DECIMALS: u8 = 15;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearSettings {
    scale: Option<f64>,
    offset: Option<f64>,
    input: Option<[f64; 2]>,
    output: Option<[f64; 2]>,
    /// Limit results to the `output` range (a sensor beyond its span).
    #[serde(default)]
    clamp: bool,
    /// Round results to this many decimals (`285 * 0.1` is not 28.5 in f64).
    decimals: Option<u8>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    scale: f64,
    offset: f64,
    /// `(low, high)` of the output range when clamping.
    clamp: Option<(f64, f64)>,
    /// `10^decimals` when rounding.
    rounding: Option<f64>,
}

impl Linear {
    pub fn new(settings: LinearSettings) -> Result<Self, String> {
        let LinearSettings {
            scale,
            offset,
            input,
            output,
            clamp,
            decimals,
        } = settings;
        let factor_form = scale.is_some() || offset.is_some();
        let (scale, offset, range) = match (input, output) {
            (None, None) => (scale.unwrap_or(1.0), offset.unwrap_or(0.0), None),
            _ if factor_form => {
                return Err(
                    "give either `scale`/`offset` or `input`/`output`, not both".to_string()
                );
            }
            (Some([raw_low, raw_high]), Some([low, high])) => {
                if raw_low == raw_high {
                    return Err(format!("`input` range [{raw_low}, {raw_high}] is empty"));
                }
                let scale = (high - low) / (raw_high - raw_low);
                (
                    scale,
                    low - raw_low * scale,
                    Some((low.min(high), low.max(high))),
                )
            }
            _ => return Err("`input` and `output` go together".to_string()),
        };
        if !scale.is_finite() || !offset.is_finite() {
            return Err("`scale`, `offset` and ranges must be finite numbers".to_string());
        }
        if clamp && range.is_none() {
            return Err("`clamp` needs an `output` range".to_string());
        }
        if let Some(decimals) = decimals
            && decimals > MAX_DECIMALS
        {
            return Err(format!("`decimals` is {decimals}; at most {MAX_DECIMALS}"));
        }
        Ok(Self {
            scale,
            offset,
            clamp: range.filter(|_| clamp),
            rounding: decimals.map(|d| 10f64.powi(i32::from(d))),
        })
    }

    pub fn apply(&self, raw: f64) -> f64 {
        let mut value = raw * self.scale + self.offset;
        if let Some((low, high)) = self.clamp {
            value = value.clamp(low, high);
        }
        if let Some(rounding) = self.rounding {
            value = (value * rounding).round() / rounding;
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(json: &str) -> Result<Linear, String> {
        Linear::new(serde_json::from_str(json).unwrap())
    }

    #[test]
    fn maps_raw_values() {
        let cases = [
            (r#"{"scale": 0.1, "offset": -40}"#, 650.0, 25.0),
            (r#"{"offset": 5}"#, 1.0, 6.0),
            (r#"{}"#, 3.5, 3.5),
            (r#"{"input": [4, 20], "output": [0, 100]}"#, 12.0, 50.0),
            (r#"{"input": [4, 20], "output": [0, 100]}"#, 2.0, -12.5),
            (
                r#"{"input": [4, 20], "output": [0, 100], "clamp": true}"#,
                2.0,
                0.0,
            ),
            (
                r#"{"input": [0, 10], "output": [100, 0], "clamp": true}"#,
                12.0,
                0.0,
            ),
            (r#"{"scale": 0.1, "decimals": 1}"#, 287.0, 28.7),
            (r#"{"scale": 1, "decimals": 0}"#, 2.5, 3.0),
        ];
        for (settings, raw, expected) in cases {
            assert_eq!(
                linear(settings).unwrap().apply(raw),
                expected,
                "{settings} of {raw}"
            );
        }
    }

    #[test]
    fn rejects_contradictions() {
        let cases = [
            (
                r#"{"offset": 1, "input": [0, 1], "output": [0, 2]}"#,
                "give either `scale`/`offset` or `input`/`output`, not both",
            ),
            (r#"{"input": [0, 1]}"#, "`input` and `output` go together"),
            (
                r#"{"input": [3, 3], "output": [0, 1]}"#,
                "`input` range [3, 3] is empty",
            ),
            (
                r#"{"scale": 2, "clamp": true}"#,
                "`clamp` needs an `output` range",
            ),
            (r#"{"decimals": 16}"#, "`decimals` is 16; at most 15"),
            (
                r#"{"input": [0, 1e-308], "output": [0, 1e308]}"#,
                "`scale`, `offset` and ranges must be finite numbers",
            ),
        ];
        for (settings, expected) in cases {
            assert_eq!(linear(settings), Err(expected.to_string()), "{settings}");
        }
    }
}
