//! `dir-sink`: a sink plugin that writes the rows as CSV into a directory the spec grants it.
//!
//! ```toml
//! [sink]
//! plugin = "dir-sink"
//! grants = { dirs = [{ host = "../out", guest = "/out", write = true }] }
//! config = { dir = "/out", file = "rows.csv" }
//! ```
//!
//! Without the grant the plugin sees no directory at all, and `open` fails with the reason.
//! The file is written under a temporary name and renamed by `finish`: a failed run leaves no
//! half-written file.

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufWriter, Write};

use etl::plugin::types::{Batch, Error, Values};
use exports::etl::plugin::sink::{Guest, GuestWriter, Writer};
use serde::Deserialize;

wit_bindgen::generate!({ path: "../../wit", world: "sink-plugin" });

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The directory, as the plugin sees it (the `guest` path of a granted directory).
    dir: String,
    /// The file's name in it.
    #[serde(default = "default_file")]
    file: String,
}

fn default_file() -> String {
    "rows.csv".into()
}

struct DirSink {
    path: String,
    temporary: String,
    out: RefCell<Option<BufWriter<File>>>,
    header: RefCell<Option<Vec<String>>>,
}

fn error(message: String) -> Error {
    Error { message, row: None }
}

fn field(out: &mut String, text: &str) {
    if text.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(text);
    }
}

impl GuestWriter for DirSink {
    fn open(config: String) -> Result<Writer, String> {
        let config: Config = serde_json::from_str(&config).map_err(|e| format!("invalid config: {e}"))?;
        let path = format!("{}/{}", config.dir.trim_end_matches('/'), config.file);
        let temporary = format!("{path}.partial");
        let file = File::create(&temporary)
            .map_err(|e| format!("cannot create {temporary}: {e} (is `{}` granted with write = true?)", config.dir))?;
        Ok(Writer::new(DirSink {
            path,
            temporary,
            out: RefCell::new(Some(BufWriter::new(file))),
            header: RefCell::new(None),
        }))
    }

    fn write(&self, input: Batch) -> Result<(), Error> {
        let mut out = self.out.borrow_mut();
        let out = out.as_mut().ok_or_else(|| error("write after finish".into()))?;
        let names: Vec<String> = input.columns.iter().map(|c| c.name.clone()).collect();
        let mut text = String::new();
        let mut header = self.header.borrow_mut();
        if header.is_none() {
            for (i, name) in names.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                field(&mut text, name);
            }
            text.push('\n');
            *header = Some(names);
        }
        let rows = input.columns.first().map_or(0, |c| match &c.values {
            Values::F64(v) => v.len(),
            Values::S64(v) => v.len(),
            Values::String(v) => v.len(),
            Values::Bool(v) => v.len(),
            Values::Dictionary(d) => d.keys.len(),
        });
        for row in 0..rows {
            for (i, column) in input.columns.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                if column.nulls.as_ref().is_some_and(|n| n[row]) {
                    continue;
                }
                match &column.values {
                    Values::F64(v) => text.push_str(&format!("{:?}", v[row])),
                    Values::S64(v) => text.push_str(&v[row].to_string()),
                    Values::String(v) => field(&mut text, &v[row]),
                    Values::Bool(v) => text.push_str(if v[row] { "true" } else { "false" }),
                    Values::Dictionary(d) => field(&mut text, &d.values[d.keys[row] as usize]),
                }
            }
            text.push('\n');
        }
        out.write_all(text.as_bytes()).map_err(|e| error(format!("writing {}: {e}", self.temporary)))
    }

    fn finish(&self) -> Result<(), Error> {
        if let Some(mut out) = self.out.borrow_mut().take() {
            out.flush().map_err(|e| error(format!("writing {}: {e}", self.temporary)))?;
        }
        std::fs::rename(&self.temporary, &self.path)
            .map_err(|e| error(format!("cannot move {} to {}: {e}", self.temporary, self.path)))
    }
}

struct Plugin;

impl Guest for Plugin {
    type Writer = DirSink;
}

export!(Plugin);
