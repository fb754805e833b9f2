//! The transform world: steps between drivers and the bus.

use std::marker::PhantomData;

use crate::bindings::exports::omh::plugin::transform_api::Guest;
use crate::{Error, Reading, instance};

/// A transform: a batch of readings in, a batch out.
pub trait Transform: Sized + 'static {
    /// Validates `settings` (JSON, see [`crate::settings()`]) and builds the
    /// transform.
    fn configure(settings: &str) -> Result<Self, Error>;

    /// Maps one batch of readings to the batch passed on.
    fn process(&mut self, batch: Vec<Reading>) -> Result<Vec<Reading>, Error>;
}

/// Adapts a [`Transform`] to the generated `transform-api` exports. Used by
/// [`export_transform!`](crate::export_transform) only.
#[doc(hidden)]
pub struct TransformExport<T>(PhantomData<T>);

impl<T: Transform> Guest for TransformExport<T> {
    fn configure(settings: String) -> Result<(), Error> {
        instance::install(T::configure(&settings)?);
        Ok(())
    }

    fn process(batch: Vec<Reading>) -> Result<Vec<Reading>, Error> {
        instance::with(|transform: &mut T| transform.process(batch))
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
