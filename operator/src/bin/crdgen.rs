//! Writes what is generated from the API types: `crdgen <dir> [<api.md>]` writes one file per CRD
//! into `<dir>` and the API reference into `<api.md>`; `crdgen` alone prints the CRDs to stdout.
#![forbid(unsafe_code)]

use std::{fs, path::PathBuf};

use phaseloop::api::{crd, reference};

fn main() -> std::io::Result<()> {
    let crds = crd::all();
    match std::env::args_os().nth(1).map(PathBuf::from) {
        Some(dir) => {
            fs::create_dir_all(&dir)?;
            for (name, yaml) in crd::files() {
                fs::write(dir.join(name), yaml)?;
            }
            if let Some(doc) = std::env::args_os().nth(2) {
                fs::write(doc, reference::markdown(&crds))?;
            }
        }
        None => crd::files().iter().for_each(|(_, yaml)| print!("{yaml}")),
    }
    Ok(())
}
