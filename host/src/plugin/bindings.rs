//! Host bindings generated from `wit/omh-plugin.wit`. The sink world imports
//! every host interface, so it is generated first; the other worlds reuse its
//! types and host traits through `with`, so one `Host` impl serves all three.

pub mod sink {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sink",
        imports: {
            "omh:plugin/sql.execute": async | trappable,
            "omh:plugin/sql.copy-rows": async | trappable,
            default: trappable,
        },
        exports: { default: async },
    });
}

pub mod driver {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "driver",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "omh:plugin/types": super::sink::omh::plugin::types,
            "omh:plugin/logging": super::sink::omh::plugin::logging,
            "omh:plugin/clock": super::sink::omh::plugin::clock,
        },
    });
}

pub mod transform {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "transform",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "omh:plugin/types": super::sink::omh::plugin::types,
            "omh:plugin/logging": super::sink::omh::plugin::logging,
            "omh:plugin/clock": super::sink::omh::plugin::clock,
        },
    });
}

pub use sink::omh::plugin::types;
