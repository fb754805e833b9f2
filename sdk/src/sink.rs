//! The sink world: northbound plugins that write bus messages through
//! [`crate::sql`].

use std::marker::PhantomData;

use crate::bindings::exports::omh::plugin::sink_api::Guest;
use crate::{Error, Message, instance};

/// A sink: maps batches of group messages to rows.
pub trait Sink: Sized + 'static {
    /// Validates `settings` (JSON, see [`crate::settings()`]) and builds the
    /// sink.
    fn configure(settings: &str) -> Result<Self, Error>;

    /// Writes one batch and returns the number of rows written. An error
    /// means nothing was committed; the host retries the batch.
    fn write(&mut self, batch: Vec<Message>) -> Result<u64, Error>;
}

/// Adapts a [`Sink`] to the generated `sink-api` exports. Used by
/// [`export_sink!`](crate::export_sink) only.
#[doc(hidden)]
pub struct SinkExport<T>(PhantomData<T>);

impl<T: Sink> Guest for SinkExport<T> {
    fn configure(settings: String) -> Result<(), Error> {
        instance::install(T::configure(&settings)?);
        Ok(())
    }

    fn write(batch: Vec<Message>) -> Result<u64, Error> {
        instance::with(|sink: &mut T| sink.write(batch))
    }
}

/// Exports a [`Sink`] implementation as this component's `sink-api`.
/// Call it once: `omh_sdk::export_sink!(MySink);`
#[macro_export]
macro_rules! export_sink {
    ($sink:ty) => {
        // The generated export macro accepts a bare type name, not a generic
        // path, hence the alias.
        type __OmhSinkExport = $crate::__private::SinkExport<$sink>;
        $crate::bindings::export_world!(__OmhSinkExport with_types_in $crate::bindings);
    };
}
