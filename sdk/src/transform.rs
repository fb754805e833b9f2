//! The transform world: steps between drivers and the bus.
//!
//! Readings carry their tag as an index into a tag table agreed once, at
//! [`Transform::bind`], so a transform looks its per-tag settings up in a
//! `Vec` (see [`by_tag_index`]) rather than hashing a name per reading.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::marker::PhantomData;

use crate::bindings::exports::omh::plugin::transform_api::Guest;
use crate::{Error, TaggedReading, instance};

/// A transform: a batch of readings in, a batch out.
pub trait Transform: Sized + 'static {
    /// Validates `settings` (JSON, see [`crate::settings()`]) and builds the
    /// transform.
    fn configure(settings: &str) -> Result<Self, Error>;

    /// Receives the input tag table (the names of the tags that will
    /// arrive; a reading's [`TaggedReading::tag`] is a position in it) and
    /// returns the output table (the names of the tags [`Transform::process`]
    /// emits, in the order its indexes refer to). Called once, after
    /// `configure` and before any `process`: build per-tag lookup tables
    /// here. Names in a table are distinct. Settings that contradict the
    /// tags are an [`Error::InvalidConfig`].
    ///
    /// The default emits the tags it receives, under the same indexes.
    fn bind(&mut self, tags: &[String]) -> Result<Vec<String>, Error> {
        Ok(tags.to_vec())
    }

    /// Maps one batch (tags indexing the input table) to the batch passed on
    /// (tags indexing the output table).
    fn process(&mut self, batch: Vec<TaggedReading>) -> Result<Vec<TaggedReading>, Error>;
}

/// `per_tag`'s entry for each of `tags`, in table order: the lookup table a
/// transform indexes by [`TaggedReading::tag`] after [`Transform::bind`].
/// Entries naming tags not in `tags` are left out: a transform's settings
/// may serve several groups, each with its own tags.
pub fn by_tag_index<T: Clone, S: BuildHasher>(
    tags: &[String],
    per_tag: &HashMap<String, T, S>,
) -> Vec<Option<T>> {
    tags.iter().map(|tag| per_tag.get(tag).cloned()).collect()
}

/// The configured transform and the length of the input table it was bound
/// to, which every incoming index is checked against: a transform may then
/// index its lookup tables without bounds worries.
struct Bound<T> {
    transform: T,
    input_tags: Option<usize>,
}

/// Adapts a [`Transform`] to the generated `transform-api` exports. Used by
/// [`export_transform!`](crate::export_transform) only.
#[doc(hidden)]
pub struct TransformExport<T>(PhantomData<T>);

impl<T: Transform> Guest for TransformExport<T> {
    fn configure(settings: String) -> Result<(), Error> {
        instance::install(Bound {
            transform: T::configure(&settings)?,
            input_tags: None,
        });
        Ok(())
    }

    fn bind(tags: Vec<String>) -> Result<Vec<String>, Error> {
        instance::with(|bound: &mut Bound<T>| {
            let output = bound.transform.bind(&tags)?;
            bound.input_tags = Some(tags.len());
            Ok(output)
        })
    }

    fn process(batch: Vec<TaggedReading>) -> Result<Vec<TaggedReading>, Error> {
        instance::with(|bound: &mut Bound<T>| {
            let Some(input_tags) = bound.input_tags else {
                return Err(Error::Other("process called before bind".into()));
            };
            if let Some(stray) = batch.iter().find(|r| r.tag as usize >= input_tags) {
                return Err(Error::Other(format!(
                    "tag index {} is outside the bound table of {input_tags} tags",
                    stray.tag
                )));
            }
            bound.transform.process(batch)
        })
    }
}

/// Exports a [`Transform`] implementation as this component's
/// `transform-api`. Call it once: `omh_sdk::export_transform!(MyTransform);`
#[macro_export]
macro_rules! export_transform {
    ($transform:ty) => {
        // The generated export macro accepts a bare type name, not a generic
        // path, hence the alias.
        type __OmhTransformExport = $crate::__private::TransformExport<$transform>;
        $crate::bindings::export_world!(__OmhTransformExport with_types_in $crate::bindings);
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_tag_index_follows_the_table_and_skips_other_groups_tags() {
        let per_tag = HashMap::from([("b".to_string(), 2), ("elsewhere".to_string(), 9)]);
        let tags = ["a", "b"].map(String::from);
        assert_eq!(by_tag_index(&tags, &per_tag), [None, Some(2)]);
    }
}
