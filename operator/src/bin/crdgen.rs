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
            for c in &crds {
                fs::write(dir.join(crd::file_name(c)), crd::to_yaml(c))?;
            }
            if let Some(doc) = std::env::args_os().nth(2) {
                fs::write(doc, reference::markdown(&crds))?;
            }
        }
        None => crds.iter().for_each(|c| print!("{}", crd::to_yaml(c))),
    }
    Ok(())
}
