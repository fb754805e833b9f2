//! A driver built against `omh:plugin@0.9.0`, a WIT version the host does
//! not speak. The host must refuse to load it, naming both versions. It is
//! deliberately not built with omh-sdk, which always targets the host's WIT.

wit_bindgen::generate!({
    world: "driver",
    path: "wit",
});

use exports::omh::plugin::driver_api::{Group, Guest};
use omh::plugin::types::{Error, GroupData, Value};

struct FutureWitDriver;

impl Guest for FutureWitDriver {
    fn configure(_endpoint: String, _settings: String, _groups: Vec<Group>) -> Result<(), Error> {
        Ok(())
    }

    fn read_group(_group: String) -> Result<GroupData, Error> {
        Ok(GroupData {
            readings: Vec::new(),
            errors: Vec::new(),
        })
    }

    fn write_tag(_group: String, _tag: String, _value: Value) -> Result<(), Error> {
        Err(Error::Unsupported(
            "future-wit-driver writes nothing".to_string(),
        ))
    }
}

export!(FutureWitDriver);
