//! `omh-host plugins inspect FILE`: a plugin file's imports, exports and the
//! settings it documents (custom section `omh:settings`, written by the
//! SDK's `describe_settings!`), read without compiling or running it.

use wasmparser::{Parser, Payload};

pub const SETTINGS_SECTION: &str = "omh:settings";

#[derive(Debug, Default)]
pub struct Description {
    /// Interfaces the component needs from the host, e.g. `wasi:sockets/tcp@0.2.x`.
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    pub settings: Option<String>,
}

pub fn describe(bytes: &[u8]) -> Result<Description, String> {
    let mut description = Description::default();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("malformed component: {e}"))? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(imports) if depth == 0 => {
                for import in imports {
                    let import = import.map_err(|e| format!("malformed import: {e}"))?;
                    description.imports.push(import.name.0.to_string());
                }
            }
            Payload::ComponentExportSection(exports) if depth == 0 => {
                for export in exports {
                    let export = export.map_err(|e| format!("malformed export: {e}"))?;
                    description.exports.push(export.name.0.to_string());
                }
            }
            // The section sits in the core module inside the component.
            Payload::CustomSection(section) if section.name() == SETTINGS_SECTION => {
                description.settings = Some(String::from_utf8_lossy(section.data()).into_owned());
            }
            _ => {}
        }
    }
    Ok(description)
}
