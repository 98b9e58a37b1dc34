//! Host-side bindings for the three plugin worlds of `wit/plugin.wit`.
//!
//! The worlds share the `types` and `host` interfaces; the source and sink bindings reuse the
//! transform bindings' modules for them (`with`), so there is one `Batch` type and one `Host`
//! trait to implement, whatever the plugin's kind.

pub mod transform {
    wasmtime::component::bindgen!({
        world: "transform-plugin",
        path: "../wit",
        exports: { default: async },
    });
}

pub mod source {
    wasmtime::component::bindgen!({
        world: "source-plugin",
        path: "../wit",
        exports: { default: async },
        with: {
            "etl:plugin/types": super::transform::etl::plugin::types,
            "etl:plugin/host": super::transform::etl::plugin::host,
        },
    });
}

pub mod sink {
    wasmtime::component::bindgen!({
        world: "sink-plugin",
        path: "../wit",
        exports: { default: async },
        with: {
            "etl:plugin/types": super::transform::etl::plugin::types,
            "etl:plugin/host": super::transform::etl::plugin::host,
        },
    });
}

pub use transform::etl::plugin::host;
pub use transform::etl::plugin::types;
