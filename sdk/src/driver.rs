//! The driver world: southbound plugins that poll devices.

use std::marker::PhantomData;

use crate::bindings::exports::omh::plugin::driver_api::Guest;
use crate::{Error, Group, GroupData, Value, instance};

/// A device driver. The host calls [`Driver::configure`] once, then
/// [`Driver::read_group`] once per group interval.
pub trait Driver: Sized + 'static {
    /// Validates everything and builds the driver. `endpoint` is the `ip:port`
    /// from the manifest (the only address the driver may connect to),
    /// `settings` the device's settings as JSON (see [`crate::settings()`]).
    /// Return [`Error::InvalidConfig`] for bad settings or tags so polling
    /// never fails on configuration.
    fn configure(endpoint: &str, settings: &str, groups: Vec<Group>) -> Result<Self, Error>;

    /// Reads every tag of `group`. Tags that fail individually belong in
    /// [`GroupData::errors`]; an `Err` fails the whole poll. The host keeps
    /// one reading or error per tag of the group (the first) and drops
    /// readings of tags the group does not have.
    fn read_group(&mut self, group: &str) -> Result<GroupData, Error>;

    /// Writes one tag. Drivers that cannot write keep this default.
    fn write_tag(&mut self, group: &str, tag: &str, value: Value) -> Result<(), Error> {
        let _ = value;
        Err(Error::Unsupported(format!(
            "writing tag `{tag}` of group `{group}` is not supported by this driver"
        )))
    }
}

/// Adapts a [`Driver`] to the generated `driver-api` exports. Used by
/// [`export_driver!`](crate::export_driver) only.
#[doc(hidden)]
pub struct DriverExport<T>(PhantomData<T>);

impl<T: Driver> Guest for DriverExport<T> {
    fn configure(endpoint: String, settings: String, groups: Vec<Group>) -> Result<(), Error> {
        instance::install(T::configure(&endpoint, &settings, groups)?);
        Ok(())
    }

    fn read_group(group: String) -> Result<GroupData, Error> {
        instance::with(|driver: &mut T| driver.read_group(&group))
    }

    fn write_tag(group: String, tag: String, value: Value) -> Result<(), Error> {
        instance::with(|driver: &mut T| driver.write_tag(&group, &tag, value))
    }
}

/// Exports a [`Driver`] implementation as this component's `driver-api`.
/// Call it once, at the plugin crate's root: `omh_sdk::export_driver!(MyDriver);`
#[macro_export]
macro_rules! export_driver {
    ($driver:ty) => {
        // The generated export macro accepts a bare type name, not a generic
        // path, hence the alias.
        type __OmhDriverExport = $crate::__private::DriverExport<$driver>;
        $crate::bindings::export_world!(__OmhDriverExport with_types_in $crate::bindings);
    };
}
