//! `probe id-*`: commands for fleet tests. Every instance of a fleet gets
//! the same arguments, so these behave by `BootInfo.instance_id`:
//!
//! | command | what it does |
//! |---|---|
//! | `id-lines N` | prints N long lines naming its id, then exits 0 |
//! | `id-fault ID` | prints `id=ID up`; instance ID then faults (null load), the others wait in POLL |
//! | `id-exit ID CODE` | prints `id=ID up`; instance ID then exits CODE, the others wait in POLL |
//! | `id-serve PORT [ID]` | answers every TCP connection to PORT with `id=ID\n`, then closes it; instance ID (if given) exits 0 at once instead |

use guest_kernel::net::TcpListener;
use guest_kernel::{boot_info, hypercall, net, println};

use crate::{faults, number};

pub fn run(command: &str, first: &str, second: &str) -> i32 {
    let id = boot_info().instance_id;
    match command {
        "id-lines" => {
            // Long lines (well past one console write each) make
            // interleaving mid-line visible.
            for line in 0..number(first) {
                println!(
                    "id={id} line={line} {}",
                    "abcdefghijklmnopqrstuvwxyz0123456789".repeat(4)
                );
            }
            0
        }
        "id-fault" | "id-exit" => {
            println!("id={id} up");
            if id == number(first) {
                if command == "id-fault" {
                    faults::probe_null_deref();
                }
                return number(second) as i32;
            }
            loop {
                hypercall::poll(u64::MAX);
            }
        }
        "id-serve" if id == number(second) => {
            println!("id={id} leaving");
            0
        }
        "id-serve" => serve(number(first) as u16, id),
        _ => 2,
    }
}

fn serve(port: u16, id: u64) -> i32 {
    let listener = match TcpListener::bind_with_backlog(port, 16) {
        Ok(l) => l,
        Err(e) => {
            println!("probe: cannot listen on port {port}: {e}");
            return 1;
        }
    };
    println!("id={id} listening on {port}");
    let answer = alloc::format!("id={id}\n");
    loop {
        while let Some(mut stream) = listener.try_accept() {
            let _ = stream.write_all(answer.as_bytes(), None);
            stream.shutdown_write();
        }
        net::wait(None);
    }
}
