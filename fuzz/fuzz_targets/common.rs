//! What the fuzz targets share.

use host_monitor::net::spec::{Identity, NetSetup, DEFAULT_MAC, USER_GATEWAY, USER_GUEST_IP};
use host_monitor::net::NetDevice;

/// A user-mode network device with `flint run --net user`'s defaults and
/// nothing published: needs no privileges and no KVM.
pub fn user_net() -> NetDevice {
    let setup = NetSetup::User {
        guest: Identity {
            mac: DEFAULT_MAC,
            ip: USER_GUEST_IP,
            gateway: Some(USER_GATEWAY),
        },
        gateway: USER_GATEWAY,
        publish: Vec::new(),
    };
    NetDevice::open(&setup)
        .expect("a user-mode network needs no privileges")
        .expect("user mode has a device")
}
