//! The plugin SDK for `omh-host`.
//!
//! A plugin crate enables exactly one of the features `driver`, `transform` or
//! `sink`, implements the matching trait ([`Driver`], [`Transform`] or
//! [`Sink`]) and calls the matching export macro once. The SDK owns the
//! generated WIT bindings, the plugin instance and the glue between them.

#[cfg(not(any(feature = "driver", feature = "transform", feature = "sink")))]
compile_error!("omh-sdk: enable exactly one of the features `driver`, `transform`, `sink`");

#[cfg(any(
    all(feature = "driver", feature = "transform"),
    all(feature = "driver", feature = "sink"),
    all(feature = "transform", feature = "sink"),
))]
compile_error!(
    "omh-sdk: enable exactly one of the features `driver`, `transform`, `sink` \
     (building several plugin crates in one cargo invocation unifies their features; \
     build them one at a time)"
);

/// Generated bindings for the world the enabled feature selects. Public only
/// so the export macros can name it from the plugin crate.
#[doc(hidden)]
pub mod bindings {
    #[cfg(feature = "driver")]
    wit_bindgen::generate!({
        world: "driver",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "omh_sdk::bindings",
        export_macro_name: "export_world",
        additional_derives: [PartialEq],
    });

    #[cfg(feature = "transform")]
    wit_bindgen::generate!({
        world: "transform",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "omh_sdk::bindings",
        export_macro_name: "export_world",
        additional_derives: [PartialEq],
    });

    #[cfg(feature = "sink")]
    wit_bindgen::generate!({
        world: "sink",
        path: "../wit",
        pub_export_macro: true,
        default_bindings_module: "omh_sdk::bindings",
        export_macro_name: "export_world",
        additional_derives: [PartialEq],
    });
}

mod describe;
mod error;
mod instance;
mod logging;
mod settings;

#[cfg(feature = "driver")]
mod driver;
#[cfg(feature = "driver")]
pub mod net;
#[cfg(feature = "sink")]
mod sink;
#[cfg(feature = "sink")]
pub mod sql;
#[cfg(feature = "transform")]
mod transform;

#[cfg(feature = "driver")]
pub use bindings::exports::omh::plugin::driver_api::{Group, Tag};
#[cfg(feature = "transform")]
pub use bindings::exports::omh::plugin::transform_api::TaggedReading;
pub use bindings::omh::plugin::logging::Level;
#[cfg(feature = "sink")]
pub use bindings::omh::plugin::sql::SqlValue;
pub use bindings::omh::plugin::types::{
    Error, GroupData, Message, Quality, Reading, TagError, Value,
};

#[cfg(feature = "driver")]
pub use driver::Driver;
pub use logging::log;
pub use settings::settings;
#[cfg(feature = "sink")]
pub use sink::Sink;
#[cfg(feature = "transform")]
pub use transform::{Transform, by_tag_index};

/// Adapter types the export macros name; not part of the API.
#[doc(hidden)]
pub mod __private {
    #[cfg(feature = "driver")]
    pub use crate::driver::DriverExport;
    #[cfg(feature = "sink")]
    pub use crate::sink::SinkExport;
    #[cfg(feature = "transform")]
    pub use crate::transform::TransformExport;
}

/// Unix time in milliseconds from the host's wall clock.
pub fn now_ms() -> i64 {
    bindings::omh::plugin::clock::now_ms()
}
