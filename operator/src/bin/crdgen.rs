//! Writes the CRD manifests generated from the API types: `crdgen <dir>` writes one file per CRD,
//! `crdgen` alone prints them all to stdout.
#![forbid(unsafe_code)]

use std::{fs, path::PathBuf};

use phaseloop::api::crd;

fn main() -> std::io::Result<()> {
    let crds = crd::all();
    match std::env::args_os().nth(1).map(PathBuf::from) {
        Some(dir) => {
            fs::create_dir_all(&dir)?;
            for c in &crds {
                fs::write(dir.join(crd::file_name(c)), crd::to_yaml(c))?;
            }
        }
        None => crds.iter().for_each(|c| print!("{}", crd::to_yaml(c))),
    }
    Ok(())
}
