//! What a plugin tells `omh-host plugins inspect` about its settings.

/// Embeds `doc` (text: the settings the plugin accepts, their defaults and
/// meaning) in the plugin file as the custom section `omh:settings`, where
/// `omh-host plugins inspect FILE` reads it without running the plugin.
///
/// ```ignore
/// omh_sdk::describe_settings!("timeout_ms  (default 1000)  request timeout");
/// ```
#[macro_export]
macro_rules! describe_settings {
    ($doc:expr) => {
        const _: () = {
            const DOC: &str = $doc;
            // A custom section holds bytes; a static array is how Rust puts
            // bytes in one (kept by #[used] through the linker's GC).
            #[used]
            #[unsafe(link_section = "omh:settings")]
            static OMH_SETTINGS: [u8; DOC.len()] = {
                let text = DOC.as_bytes();
                let mut bytes = [0u8; DOC.len()];
                let mut i = 0;
                while i < text.len() {
                    bytes[i] = text[i];
                    i += 1;
                }
                bytes
            };
        };
    };
}
