//! The units this transform knows, by quantity, each as an affine map to
//! the quantity's SI unit: `si = value * factor + offset`. Symbols are
//! case-sensitive (`mbar` is not `Mbar`); a near miss is suggested.

/// A unit: its symbol and how to reach the SI unit of its quantity.
struct Unit {
    symbol: &'static str,
    factor: f64,
    offset: f64,
}

const fn unit(symbol: &'static str, factor: f64) -> Unit {
    Unit {
        symbol,
        factor,
        offset: 0.0,
    }
}

/// US gallon in cubic metres.
const GALLON: f64 = 3.785_411_784e-3;

const QUANTITIES: &[(&str, &[Unit])] = &[
    (
        "temperature",
        &[
            unit("K", 1.0),
            Unit {
                symbol: "degC",
                factor: 1.0,
                offset: 273.15,
            },
            Unit {
                symbol: "degF",
                factor: 5.0 / 9.0,
                offset: 273.15 - 32.0 * 5.0 / 9.0,
            },
        ],
    ),
    (
        "pressure",
        &[
            unit("Pa", 1.0),
            unit("hPa", 1e2),
            unit("kPa", 1e3),
            unit("MPa", 1e6),
            unit("mbar", 1e2),
            unit("bar", 1e5),
            unit("psi", 6_894.757_293_168_361),
            unit("atm", 101_325.0),
            unit("mmHg", 133.322_387_415),
            unit("inH2O", 249.088_908_333),
        ],
    ),
    (
        "length",
        &[
            unit("mm", 1e-3),
            unit("cm", 1e-2),
            unit("m", 1.0),
            unit("km", 1e3),
            unit("in", 0.0254),
            unit("ft", 0.3048),
        ],
    ),
    (
        "mass",
        &[
            unit("g", 1e-3),
            unit("kg", 1.0),
            unit("t", 1e3),
            unit("lb", 0.453_592_37),
        ],
    ),
    (
        "volume",
        &[unit("l", 1e-3), unit("m3", 1.0), unit("gal", GALLON)],
    ),
    (
        "flow",
        &[
            unit("l/s", 1e-3),
            unit("l/min", 1e-3 / 60.0),
            unit("m3/h", 1.0 / 3600.0),
            unit("gal/min", GALLON / 60.0),
        ],
    ),
    (
        "speed",
        &[
            unit("m/s", 1.0),
            unit("km/h", 1.0 / 3.6),
            unit("mph", 0.447_04),
        ],
    ),
    (
        "energy",
        &[
            unit("J", 1.0),
            unit("kJ", 1e3),
            unit("Wh", 3.6e3),
            unit("kWh", 3.6e6),
        ],
    ),
    (
        "power",
        &[
            unit("W", 1.0),
            unit("kW", 1e3),
            unit("hp", 745.699_871_582_270_2),
        ],
    ),
    (
        "time",
        &[
            unit("ms", 1e-3),
            unit("s", 1.0),
            unit("min", 60.0),
            unit("h", 3600.0),
        ],
    ),
];

/// A conversion between two units of one quantity, folded into one affine
/// map: `to = from * scale + offset`.
#[derive(Clone, Debug, PartialEq)]
pub struct Conversion {
    scale: f64,
    offset: f64,
}

impl Conversion {
    pub fn between(from: &str, to: &str) -> Result<Self, String> {
        let (from_quantity, from_unit) = lookup(from)?;
        let (to_quantity, to_unit) = lookup(to)?;
        if from_quantity != to_quantity {
            return Err(format!(
                "cannot convert `{from}` ({from_quantity}) to `{to}` ({to_quantity})"
            ));
        }
        // si = v * f1 + o1, out = (si - o2) / f2
        Ok(Self {
            scale: from_unit.factor / to_unit.factor,
            offset: (from_unit.offset - to_unit.offset) / to_unit.factor,
        })
    }

    /// Converts `value`, rounded to [`SIGNIFICANT_DIGITS`] so that 100 degC
    /// is 212 degF, not the 211.99999999999994 the folded factors give.
    pub fn apply(&self, value: f64) -> f64 {
        let scaled = value * self.scale;
        // The error is relative to the larger term, not to the sum: 32 degF
        // is 17.78 - 17.78 degC, which must round to 0.
        round_significant(scaled + self.offset, scaled.abs().max(self.offset.abs()))
    }
}

/// Digits a converted value keeps, relative to the larger of its terms:
/// conversions through SI lose the last one to three of f64's ~16; no
/// instrument resolves 12.
const SIGNIFICANT_DIGITS: i32 = 12;

fn round_significant(value: f64, magnitude: f64) -> f64 {
    if magnitude == 0.0 || !magnitude.is_finite() || !value.is_finite() {
        return value;
    }
    let decimals = SIGNIFICANT_DIGITS - 1 - magnitude.log10().floor() as i32;
    // Powers of ten are exact up to 10^22; divide by one rather than
    // multiply by its (inexact) inverse.
    match decimals {
        // 10^decimals would overflow: nothing measured is this small.
        301.. => value,
        0.. => {
            let power = 10f64.powi(decimals);
            (value * power).round() / power
        }
        _ => {
            let power = 10f64.powi(-decimals);
            (value / power).round() * power
        }
    }
}

fn lookup(symbol: &str) -> Result<(&'static str, &'static Unit), String> {
    let all = || {
        QUANTITIES
            .iter()
            .flat_map(|(quantity, units)| units.iter().map(move |unit| (*quantity, unit)))
    };
    if let Some(found) = all().find(|(_, unit)| unit.symbol == symbol) {
        return Ok(found);
    }
    if let Some((_, near)) = all().find(|(_, unit)| unit.symbol.eq_ignore_ascii_case(symbol)) {
        return Err(format!(
            "unknown unit `{symbol}`; did you mean `{}`?",
            near.symbol
        ));
    }
    let known: Vec<String> = QUANTITIES
        .iter()
        .map(|(quantity, units)| {
            let symbols: Vec<&str> = units.iter().map(|unit| unit.symbol).collect();
            format!("{quantity}: {}", symbols.join(", "))
        })
        .collect();
    Err(format!(
        "unknown unit `{symbol}`; known units: {}",
        known.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_between_units_of_a_quantity() {
        let cases = [
            ("degC", "degF", 100.0, 212.0),
            ("degC", "degF", -40.0, -40.0),
            ("degF", "degC", 32.0, 0.0),
            ("K", "degC", 0.0, -273.15),
            ("bar", "psi", 1.0, 14.503_773_773),
            ("psi", "kPa", 1.0, 6.894_757_293_17),
            ("mbar", "hPa", 1013.25, 1013.25),
            ("m3/h", "l/min", 6.0, 100.0),
            ("kWh", "J", 1.0, 3.6e6),
            ("in", "mm", 1.0, 25.4),
            ("h", "min", 1.5, 90.0),
            ("bar", "bar", 2.5, 2.5),
            ("t", "g", 1.234_567_890_123_45e20, 1.234_567_890_12e26),
        ];
        for (from, to, value, expected) in cases {
            let converted = Conversion::between(from, to).unwrap().apply(value);
            assert_eq!(converted, expected, "{value:e} {from} in {to}");
        }
    }

    #[test]
    fn unknown_and_incompatible_units_say_why() {
        let known = "known units: temperature: K, degC, degF; \
            pressure: Pa, hPa, kPa, MPa, mbar, bar, psi, atm, mmHg, inH2O; \
            length: mm, cm, m, km, in, ft; mass: g, kg, t, lb; volume: l, m3, gal; \
            flow: l/s, l/min, m3/h, gal/min; speed: m/s, km/h, mph; energy: J, kJ, Wh, kWh; \
            power: W, kW, hp; time: ms, s, min, h";
        let cases = [
            ("degX", "degF", format!("unknown unit `degX`; {known}")),
            ("degC", "", format!("unknown unit ``; {known}")),
            (
                "KPA",
                "psi",
                "unknown unit `KPA`; did you mean `kPa`?".to_string(),
            ),
            (
                "bar",
                "degF",
                "cannot convert `bar` (pressure) to `degF` (temperature)".to_string(),
            ),
            (
                "m3",
                "m3/h",
                "cannot convert `m3` (volume) to `m3/h` (flow)".to_string(),
            ),
        ];
        for (from, to, expected) in cases {
            assert_eq!(
                Conversion::between(from, to),
                Err(expected),
                "{from} -> {to}"
            );
        }
    }
}
