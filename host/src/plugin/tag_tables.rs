//! The tag tables of one group's transform chain. Readings cross a
//! transform with their tag as an index into a table agreed at `bind`:
//! table 0 is the group's tags in manifest order, table `i + 1` what step
//! `i` emits. A table is fixed by the first successful `bind` of its step;
//! a restarted or hot-swapped instance must return the same one, or it
//! would mix indexes of two tables.

use super::supervisor::StartError;
use std::collections::HashSet;
use std::sync::OnceLock;

pub struct TagTables {
    tables: Box<[OnceLock<Box<[String]>>]>,
}

impl TagTables {
    /// The tables of a chain of `steps` transforms over `group_tags`.
    pub fn new(group_tags: Vec<String>, steps: usize) -> Self {
        let tables: Box<[OnceLock<Box<[String]>>]> = (0..=steps).map(|_| OnceLock::new()).collect();
        tables[0]
            .set(group_tags.into())
            .expect("a fresh table is unset");
        Self { tables }
    }

    /// Table `table`, once the step emitting it has been bound.
    pub fn get(&self, table: usize) -> Option<&[String]> {
        self.tables.get(table)?.get().map(|names| &**names)
    }

    /// Records `output`, what step `step` returned from `bind`, as its
    /// output table, or checks it against the one recorded before.
    pub fn settle_output(&self, step: usize, output: Vec<String>) -> Result<(), StartError> {
        let mut seen = HashSet::new();
        if let Some(twice) = output.iter().find(|name| !seen.insert(name.as_str())) {
            return Err(StartError::InvalidConfig(format!(
                "bind returned tag `{twice}` twice"
            )));
        }
        let settled = self.tables[step + 1].get_or_init(|| output.clone().into());
        match changed(settled, &output) {
            None => Ok(()),
            Some(difference) => Err(StartError::TagTableChanged(format!(
                "bind returned other tags than the chain was built with ({difference}); \
                 restart omh-host to build the chain anew"
            ))),
        }
    }
}

/// The first difference between the settled table and a new one.
fn changed(settled: &[String], new: &[String]) -> Option<String> {
    if let Some((at, (was, now))) = settled
        .iter()
        .zip(new)
        .enumerate()
        .find(|(_, (was, now))| was != now)
    {
        return Some(format!("tag {at} is `{now}`, was `{was}`"));
    }
    (settled.len() != new.len()).then(|| format!("{} tags, were {}", new.len(), settled.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn the_first_bind_fixes_a_table_and_later_ones_must_match_it() {
        let tables = TagTables::new(names(&["a", "b"]), 2);
        assert_eq!(tables.get(0), Some(&names(&["a", "b"])[..]));
        assert_eq!(tables.get(1), None);
        tables.settle_output(0, names(&["x/a", "x/b"])).unwrap();
        tables.settle_output(0, names(&["x/a", "x/b"])).unwrap();
        assert_eq!(tables.get(1), Some(&names(&["x/a", "x/b"])[..]));
        let refused = |output: &[&str]| {
            tables
                .settle_output(0, names(output))
                .unwrap_err()
                .to_string()
        };
        assert!(refused(&["x/a", "y/b"]).starts_with(
            "bind returned other tags than the chain was built with (tag 1 is `y/b`, was `x/b`)"
        ));
        assert!(refused(&["x/a", "x/b", "m"]).contains("(3 tags, were 2)"));
        assert_eq!(refused(&["m", "m"]), "bind returned tag `m` twice");
        assert_eq!(tables.get(1), Some(&names(&["x/a", "x/b"])[..]));
    }
}
