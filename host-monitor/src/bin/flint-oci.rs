//! `flint-oci`: the runc-compatible OCI runtime for Flint images (see
//! `host_monitor::oci`).

use clap::Parser;

fn main() {
    // Before anything opens a file: containerd's shim leaks its socket to
    // us as fd 3, and the container's process must not hold it.
    host_monitor::oci::create::close_inherited_fds();
    let cli = host_monitor::oci::OciCli::parse();
    std::process::exit(host_monitor::oci::main(cli));
}
