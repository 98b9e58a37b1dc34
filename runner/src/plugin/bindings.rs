//! Host-side bindings for the plugin worlds of every contract version the runner speaks.
//!
//! The current contract is `wit/plugin.wit`; older versions the runner still runs are frozen
//! copies under `runner/contracts/<version>/`. Within a version the worlds share the `types`
//! and `host` interfaces: the source and sink bindings reuse the transform bindings' modules for
//! them (`with`), so each version has one `Batch` type and one `Host` trait to implement.

/// Generates the three worlds of one contract version from the WIT at `$path`.
macro_rules! worlds {
    ($path:tt) => {
        pub mod transform {
            wasmtime::component::bindgen!({
                world: "transform-plugin",
                path: $path,
                exports: { default: async },
            });
        }

        pub mod source {
            wasmtime::component::bindgen!({
                world: "source-plugin",
                path: $path,
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
                path: $path,
                exports: { default: async },
                with: {
                    "etl:plugin/types": super::transform::etl::plugin::types,
                    "etl:plugin/host": super::transform::etl::plugin::host,
                },
            });
        }

        pub use transform::etl::plugin::host;
        pub use transform::etl::plugin::types;
    };
}

/// `etl:plugin@0.2.1`, the current contract (it serves 0.2.0 plugins too: semver-compatible).
pub mod v0_2 {
    worlds!("../wit");
}

/// `etl:plugin@0.1.0`: no dictionary-encoded text.
pub mod v0_1 {
    worlds!("contracts/0.1.0");
}
