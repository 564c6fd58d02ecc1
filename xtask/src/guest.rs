//! Building guest images.
//!
//! A guest is a crate in `apps/<name>/` or `tests/guests/<name>/`. It is
//! built for `x86_64-unknown-none` with the `guest` profile into
//! `target/guest/`, with rustc flags set explicitly here: a static, non-PIE
//! executable laid out by `guest-kernel/link.ld`. The flags go in
//! `CARGO_ENCODED_RUSTFLAGS`, which overrides whatever the caller's
//! environment holds (a cargo started from a test or build script inherits
//! an empty one, which would silently give an ET_DYN image). The result is
//! copied to `target/flint/<name>.elf`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::toolchain::{self, GUEST_TARGET};
use crate::{cmd, root, target_dir, Error, Result};

/// Where guest crates live, relative to the workspace root.
pub const GUEST_DIRS: [&str; 2] = ["apps", "tests/guests"];

/// The folder images are written to: `target/flint/`.
pub fn image_dir() -> PathBuf {
    target_dir().join("flint")
}

/// The image path of guest `name`: `target/flint/<name>.elf`.
pub fn image_path(name: &str) -> PathBuf {
    image_dir().join(format!("{name}.elf"))
}

/// The crate folder of guest `name`.
pub fn crate_dir(name: &str) -> Result<PathBuf> {
    let valid = !name.is_empty() && !name.contains(['/', '\\']) && name != "." && name != "..";
    GUEST_DIRS
        .iter()
        .map(|dir| root().join(dir).join(name))
        .find(|dir| valid && dir.join("Cargo.toml").is_file())
        .ok_or_else(|| Error::UnknownGuest(name.to_owned()))
}

/// Every guest crate's name, apps first.
pub fn all() -> Result<Vec<String>> {
    let mut names = Vec::new();
    for dir in GUEST_DIRS {
        let dir = root().join(dir);
        if !dir.is_dir() {
            continue;
        }
        let mut found = Vec::new();
        for entry in fs::read_dir(&dir).map_err(Error::io(&dir))? {
            let path = entry.map_err(Error::io(&dir))?.path();
            if path.join("Cargo.toml").is_file() {
                found.extend(path.file_name().map(|n| n.to_string_lossy().into_owned()));
            }
        }
        found.sort();
        names.extend(found);
    }
    Ok(names)
}

/// The rustc flags of every guest build.
pub fn rustflags() -> Vec<String> {
    let script = root().join("guest-kernel").join("link.ld");
    vec![
        "-Crelocation-model=static".into(),
        format!("-Clink-arg=-T{}", script.display()),
        "-Clink-arg=--no-pie".into(),
        "-Clink-arg=-zmax-page-size=4096".into(),
        "-Clink-arg=--build-id=none".into(),
    ]
}

/// [`rustflags`], and for the `guest-debug` profile unwind tables, so
/// that gdb's `bt` walks the guest's stack.
fn profile_rustflags(profile: &str) -> Vec<String> {
    let mut flags = rustflags();
    if profile == "guest-debug" {
        flags.push("-Cforce-unwind-tables=yes".into());
        flags.push("-Cforce-frame-pointers=yes".into());
    }
    flags
}

/// Builds guest `name` and returns the path of its image,
/// `target/flint/<name>.elf`. Cheap when nothing changed (cargo decides).
pub fn build(name: &str) -> Result<PathBuf> {
    build_profile(name, "guest", &image_path(name))
}

/// Builds guest `name` with full debug info and no optimisation (the
/// `guest-debug` profile), for gdb (`flint run --gdb`), and returns the
/// path of its image, `target/flint/<name>-debug.elf`.
pub fn build_debug(name: &str) -> Result<PathBuf> {
    build_profile(
        name,
        "guest-debug",
        &image_dir().join(format!("{name}-debug.elf")),
    )
}

fn build_profile(name: &str, profile: &str, image: &Path) -> Result<PathBuf> {
    let dir = crate_dir(name)?;
    let package = package_name(&dir)?;
    toolchain::ensure_guest_target()?;
    let guest_target = target_dir().join("guest");
    cmd::run(
        cmd::cargo()
            .args([
                "build",
                "--quiet",
                "--profile",
                profile,
                "--target",
                GUEST_TARGET,
            ])
            .arg("--target-dir")
            .arg(&guest_target)
            .args(["--package", &package])
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                profile_rustflags(profile).join("\x1f"),
            )
            .env_remove("RUSTFLAGS"),
    )?;
    let built = guest_target.join(GUEST_TARGET).join(profile).join(&package);
    if !built.is_file() {
        return Err(Error::MissingArtifact(built));
    }
    install(&built, image)?;
    Ok(image.to_owned())
}

/// Copies `from` to `to` through a temporary file and a rename, so a
/// concurrent reader never sees a half-written image.
fn install(from: &Path, to: &Path) -> Result<()> {
    let dir = to.parent().expect("image paths have a folder");
    fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        to.file_name()
            .expect("image paths have a file name")
            .to_string_lossy(),
        std::process::id()
    ));
    fs::copy(from, &tmp).map_err(Error::io(&tmp))?;
    fs::rename(&tmp, to).map_err(Error::io(to))
}

/// The `name` in the `[package]` section of `dir/Cargo.toml`.
fn package_name(dir: &Path) -> Result<String> {
    let manifest = dir.join("Cargo.toml");
    let text = fs::read_to_string(&manifest).map_err(Error::io(&manifest))?;
    let mut in_package = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if let Some(value) = line.strip_prefix("name").map(str::trim_start) {
            if in_package {
                if let Some(value) = value.strip_prefix('=') {
                    return Ok(value.trim().trim_matches('"').to_owned());
                }
            }
        }
    }
    Err(Error::NoPackageName(manifest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_is_an_app() {
        assert_eq!(crate_dir("hello").unwrap(), root().join("apps/hello"));
        assert_eq!(package_name(&root().join("apps/hello")).unwrap(), "hello");
    }

    #[test]
    fn unknown_or_path_like_names_are_refused() {
        assert!(matches!(
            crate_dir("no-such-app"),
            Err(Error::UnknownGuest(_))
        ));
        assert!(matches!(
            crate_dir("../apps/hello"),
            Err(Error::UnknownGuest(_))
        ));
        assert!(matches!(crate_dir(""), Err(Error::UnknownGuest(_))));
    }

    #[test]
    fn guest_flags_make_a_static_non_pie_image() {
        let flags = rustflags();
        assert!(flags.contains(&"-Crelocation-model=static".to_owned()));
        assert!(flags.iter().any(|f| f.ends_with("guest-kernel/link.ld")));
    }
}
