//! `cargo xtask oci <app>`: an app as an OCI image archive,
//! `target/flint/<app>.oci.tar`, that `ctr image import` takes: an
//! `oci-layout`, an `index.json` naming the image
//! `docker.io/flint/<app>:latest`, a manifest, a config whose entrypoint is
//! the Flint image `/<app>.elf`, and one gzip'd layer holding it. Run it
//! with `flint-oci` as the runtime (README, "Running under containerd and
//! Kubernetes").
//!
//! The archives are written here, byte for byte reproducible (no tool but
//! this file), and so is the pod sandbox image `docker.io/flint/pause:latest`
//! the CRI needs (`cargo xtask oci --pause`), whose container flint-oci
//! runs without a VM.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

use crate::{guest, Error, Result};

/// One file of an image's layer.
pub struct LayerFile<'a> {
    /// Its path in the root file system, without the leading `/`.
    pub name: &'a str,
    /// Its contents.
    pub bytes: &'a [u8],
    /// Its permission bits.
    pub mode: u32,
}

/// The name an app's image gets in containerd.
pub fn image_name(app: &str) -> String {
    format!("docker.io/flint/{app}:latest")
}

/// The pause image's name, for the CRI's `sandbox_image`.
pub const PAUSE_IMAGE: &str = "docker.io/flint/pause:latest";

/// Builds `app` and writes `target/flint/<app>.oci.tar`; returns its path.
pub fn build_app(app: &str) -> Result<PathBuf> {
    let image = guest::build(app)?;
    let out = guest::image_dir().join(format!("{app}.oci.tar"));
    write_app(&out, app, &image)?;
    Ok(out)
}

/// Writes the image archive of `app`, whose Flint image is the file
/// `image`, to `out`: entrypoint `/<app>.elf`, name [`image_name`].
pub fn write_app(out: &Path, app: &str, image: &Path) -> Result<()> {
    let bytes = std::fs::read(image).map_err(Error::io(image))?;
    let file = format!("{app}.elf");
    write_image(
        out,
        &image_name(app),
        &[LayerFile {
            name: &file,
            bytes: &bytes,
            mode: 0o755,
        }],
        &[format!("/{file}")],
    )
}

/// Writes the pod sandbox image `target/flint/pause.oci.tar`: flint-oci
/// knows a sandbox by its CRI annotation and never runs its entrypoint, so
/// the layer holds only a note saying so.
pub fn build_pause() -> Result<PathBuf> {
    let out = guest::image_dir().join("pause.oci.tar");
    std::fs::create_dir_all(guest::image_dir()).map_err(Error::io(guest::image_dir()))?;
    write_pause(&out)?;
    Ok(out)
}

/// Writes the pod sandbox image [`PAUSE_IMAGE`] to `out`.
pub fn write_pause(out: &Path) -> Result<()> {
    write_image(
        out,
        PAUSE_IMAGE,
        &[LayerFile {
            name: "pause",
            bytes: b"A Flint pod sandbox: flint-oci keeps its process alive until killed; there is nothing to run.\n",
            mode: 0o644,
        }],
        &["/pause".to_owned()],
    )
}

/// Writes an OCI image archive to `out`: image `name`, one layer of
/// `files`, `entrypoint` as the config's Entrypoint.
pub fn write_image(
    out: &Path,
    name: &str,
    files: &[LayerFile],
    entrypoint: &[String],
) -> Result<()> {
    let mut layer_tar = Tar::default();
    for f in files {
        layer_tar.file(f.name, f.bytes, f.mode);
    }
    let layer_tar = layer_tar.finish();
    let diff_id = sha256(&layer_tar);
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&layer_tar).map_err(Error::io(out))?;
    let layer = gz.finish().map_err(Error::io(out))?;

    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": entrypoint,
            "Labels": { "dev.flint.image": "1" },
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        "history": [{ "created_by": "cargo xtask oci" }],
    });
    let config = serde_json::to_vec(&config).expect("JSON values serialise");
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{}", sha256(&config)),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{}", sha256(&layer)),
            "size": layer.len(),
        }],
    });
    let manifest = serde_json::to_vec(&manifest).expect("JSON values serialise");
    let tag = name.rsplit_once(':').map_or("latest", |(_, t)| t);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", sha256(&manifest)),
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    });
    let index = serde_json::to_vec(&index).expect("JSON values serialise");

    let mut archive = Tar::default();
    archive.file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, 0o644);
    archive.file("index.json", &index, 0o644);
    archive.dir("blobs/");
    archive.dir("blobs/sha256/");
    for blob in [&config, &manifest, &layer] {
        archive.file(&format!("blobs/sha256/{}", sha256(blob)), blob, 0o644);
    }
    let tmp = out.with_extension("tar.tmp");
    std::fs::write(&tmp, archive.finish()).map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, out).map_err(Error::io(out))
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A minimal ustar writer: regular files and directories, owner root,
/// mtime 0 (reproducible).
#[derive(Default)]
struct Tar {
    bytes: Vec<u8>,
}

impl Tar {
    fn file(&mut self, name: &str, data: &[u8], mode: u32) {
        self.header(name, data.len() as u64, mode, b'0');
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn dir(&mut self, name: &str) {
        self.header(name, 0, 0o755, b'5');
    }

    fn header(&mut self, name: &str, size: u64, mode: u32, kind: u8) {
        assert!(name.len() < 100, "tar names here are short: {name}");
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], 0);
        h[156] = kind;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..269].copy_from_slice(b"root");
        h[297..301].copy_from_slice(b"root");
        // The checksum is computed with its own field as spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(text.as_bytes());
        self.bytes.extend_from_slice(&h);
    }

    fn pad(&mut self) {
        let rem = self.bytes.len() % 512;
        if rem != 0 {
            self.bytes.resize(self.bytes.len() + 512 - rem, 0);
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.bytes.resize(self.bytes.len() + 1024, 0);
        self.bytes
    }
}

/// Writes `value` as NUL-terminated zero-padded octal filling `field`.
fn octal(field: &mut [u8], value: u64) {
    let text = format!("{value:0width$o}\0", width = field.len() - 1);
    field.copy_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tar_headers_have_valid_checksums() {
        let mut t = Tar::default();
        t.file("a.txt", b"hello", 0o644);
        let bytes = t.finish();
        assert_eq!(bytes.len(), 512 + 512 + 1024);
        let mut h = bytes[..512].to_vec();
        let stored = u32::from_str_radix(std::str::from_utf8(&h[148..154]).unwrap(), 8).unwrap();
        h[148..156].copy_from_slice(b"        ");
        assert_eq!(stored, h.iter().map(|&b| u32::from(b)).sum::<u32>());
        assert_eq!(&bytes[512..517], b"hello");
    }
}
