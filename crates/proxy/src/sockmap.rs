//! Forwarding in the kernel: a BPF sockmap redirects every byte one socket
//! of a pair receives straight to the other's send queue, so the proxy does
//! no per-byte work and is not even woken while a session runs
//! (docs/proxy.md, "Forwarding in the kernel").
//!
//! Two SOCKHASH maps, keyed by socket cookie (a socket's unique 64-bit id):
//! * `peers`: the key is a socket's cookie, the value its *peer* socket. No
//!   program is attached: being in it changes nothing about a socket.
//! * `active`: the key is a socket's own cookie. The stream-verdict program
//!   is attached here, so inserting a socket starts redirecting what it
//!   receives to `peers[its cookie]` (which is already there: no byte can
//!   find its peer missing).
//!
//! The program is 15 hand-assembled instructions loaded with bpf(2); no BPF
//! toolchain or library is needed. A socket leaves both maps when it is
//! closed (the kernel unlinks it), so nothing needs removing by hand.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::tcp;

/// Pairs the kernel can hold at once; one more falls back to user space.
const MAX_PAIRS: u32 = 32 * 1024;

// bpf(2) commands, map and program types (include/uapi/linux/bpf.h).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_MAP_TYPE_SOCKHASH: u32 = 18;
const BPF_PROG_TYPE_SK_SKB: u32 = 14;
const BPF_SK_SKB_STREAM_VERDICT: u32 = 5;
const BPF_NOEXIST: u64 = 1;

/// The maps and the program, shared by every connection of the proxy.
#[derive(Debug)]
pub struct Kernel {
    peers: OwnedFd,
    active: OwnedFd,
    // Held so the program stays attached for the proxy's life.
    _verdict: OwnedFd,
}

/// Why kernel forwarding is not available.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {io}")]
pub struct Unavailable {
    step: &'static str,
    io: io::Error,
}

impl Unavailable {
    /// What the operator can do about it, for the one warning at start.
    pub fn advice(&self) -> &'static str {
        match self.io.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => {
                "run the proxy with CAP_BPF and CAP_NET_ADMIN (or as root), or set proxy.kernel_forwarding = false to silence this"
            }
            _ => {
                "the kernel lacks BPF sockmap support (CONFIG_BPF_SYSCALL, CONFIG_BPF_STREAM_PARSER, Linux 5.10 or later); set proxy.kernel_forwarding = false to silence this"
            }
        }
    }
}

impl Kernel {
    /// Creates the maps and loads and attaches the verdict program.
    pub fn load() -> Result<Kernel, Unavailable> {
        let fail = |step| move |io| Unavailable { step, io };
        let peers = create_map("pgw_peers").map_err(fail("create the peers map"))?;
        let active = create_map("pgw_active").map_err(fail("create the active map"))?;
        let verdict = load_verdict(peers.as_raw_fd()).map_err(fail("load the verdict program"))?;
        attach(active.as_raw_fd(), verdict.as_raw_fd())
            .map_err(fail("attach the verdict program"))?;
        Ok(Kernel {
            peers,
            active,
            _verdict: verdict,
        })
    }

    /// Hands a connected pair to the kernel. Every byte either socket has
    /// received and user space has not read, and every byte it receives
    /// from now on, goes to the other, in order. The caller must have
    /// written everything it read and must not read either socket again.
    ///
    /// `Err(Refused)` leaves the pair as it was (e.g. the maps are full):
    /// forward it in user space. `Err(Broken)` means forwarding may have
    /// begun: the pair can only be closed.
    pub fn join(&self, a: RawFd, b: RawFd) -> Result<(), JoinError> {
        let (ka, kb) = (
            tcp::cookie(a).map_err(JoinError::Refused)?,
            tcp::cookie(b).map_err(JoinError::Refused)?,
        );
        // Peers first: no program runs for them yet.
        update(&self.peers, ka, b).map_err(JoinError::Refused)?;
        // A half-entered pair is simply not used: `peers[ka]` redirects
        // nothing while `a` is not active, and closing removes it.
        update(&self.peers, kb, a).map_err(JoinError::Refused)?;
        update(&self.active, ka, a).map_err(JoinError::Broken)?;
        update(&self.active, kb, b).map_err(JoinError::Broken)?;
        // Bytes that arrived before a socket became active wait in its
        // receive queue; this runs them through the program, ahead of
        // anything newer.
        tcp::nudge(a).map_err(JoinError::Broken)?;
        tcp::nudge(b).map_err(JoinError::Broken)?;
        Ok(())
    }

    /// How many sockets the active map holds now (for tests: a closed
    /// connection must leave none behind).
    pub fn active_sockets(&self) -> io::Result<usize> {
        count_keys(&self.active)
    }
}

#[derive(Debug)]
pub enum JoinError {
    Refused(io::Error),
    Broken(io::Error),
}

/// bpf_attr for BPF_MAP_CREATE (the leading fields; the kernel zeroes the rest).
#[repr(C)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// bpf_attr for the BPF_MAP_*_ELEM commands.
#[repr(C)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// bpf_attr for BPF_PROG_LOAD.
#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// bpf_attr for BPF_PROG_ATTACH.
#[repr(C)]
struct ProgAttach {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

/// bpf(2). Returns the syscall's non-negative result.
fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, initialised #[repr(C)] bpf_attr prefix of
    // the size passed; the kernel reads (and for some commands writes)
    // only that many bytes, and any pointers inside it point to buffers
    // the caller keeps alive for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a file descriptor bpf(2) returned.
fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this new descriptor; nothing else
    // owns it.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

fn name(text: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..text.len()].copy_from_slice(text.as_bytes());
    out
}

/// A SOCKHASH from a u64 cookie to a socket.
fn create_map(map_name: &str) -> io::Result<OwnedFd> {
    let mut attr = MapCreate {
        map_type: BPF_MAP_TYPE_SOCKHASH,
        key_size: 8,
        value_size: 4,
        max_entries: 2 * MAX_PAIRS,
        map_flags: 0,
        inner_map_fd: 0,
        numa_node: 0,
        map_name: name(map_name),
    };
    bpf(BPF_MAP_CREATE, &mut attr).map(owned)
}

fn update(map: &OwnedFd, key: u64, socket: RawFd) -> io::Result<()> {
    let value = socket as u32;
    let mut attr = MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u64 as u64,
        value: &value as *const u32 as u64,
        flags: BPF_NOEXIST,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

fn count_keys(map: &OwnedFd) -> io::Result<usize> {
    let (mut key, mut next) = (0u64, 0u64);
    let mut count = 0;
    let mut first = true;
    loop {
        let mut attr = MapElem {
            map_fd: map.as_raw_fd() as u32,
            _pad: 0,
            // A null key asks for the first one.
            key: if first { 0 } else { &key as *const u64 as u64 },
            value: &mut next as *mut u64 as u64,
            flags: 0,
        };
        match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(_) => {
                count += 1;
                key = next;
                first = false;
            }
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => return Ok(count),
            Err(err) => return Err(err),
        }
    }
}

/// One BPF instruction: opcode, dst and src registers, offset, immediate.
const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    (code as u64)
        | (((dst | (src << 4)) as u64) << 8)
        | ((off as u16 as u64) << 16)
        | ((imm as u32 as u64) << 32)
}

// Opcodes used below.
const MOV64_REG: u8 = 0xbf;
const MOV64_IMM: u8 = 0xb7;
const ADD64_IMM: u8 = 0x07;
const STX_DW: u8 = 0x7b;
const LDX_W: u8 = 0x61;
const JNE_IMM: u8 = 0x55;
const LD_IMM64: u8 = 0x18;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
/// src_reg of LD_IMM64 saying "the immediate is a map file descriptor".
const PSEUDO_MAP_FD: u8 = 1;
const SK_DROP: i32 = 0;
// Helper function ids.
const GET_SOCKET_COOKIE: i32 = 46;
const SK_REDIRECT_HASH: i32 = 72;

/// The stream verdict, in C:
///
/// ```c
/// int verdict(struct __sk_buff *skb) {
///     if (skb->len == 0)
///         return SK_DROP;
///     __u64 key = bpf_get_socket_cookie(skb);
///     return bpf_sk_redirect_hash(skb, &peers, &key, 0 /* egress */);
/// }
/// ```
///
/// An empty skb is a bare FIN: redirected, the kernel's sender takes its
/// zero-byte send for a broken pipe and fails the peer socket (EPIPE).
/// The end is passed on by `relay` instead. A missing peer (only while a
/// pair is being closed) drops the bytes.
fn load_verdict(peers: RawFd) -> io::Result<OwnedFd> {
    let program = [
        insn(LDX_W, 2, 1, 0, 0),                    // r2 = skb->len
        insn(JNE_IMM, 2, 0, 2, 0),                  // if r2 != 0 skip 2
        insn(MOV64_IMM, 0, 0, 0, SK_DROP),          // r0 = SK_DROP
        insn(EXIT, 0, 0, 0, 0),                     //
        insn(MOV64_REG, 6, 1, 0, 0),                // r6 = skb
        insn(CALL, 0, 0, 0, GET_SOCKET_COOKIE),     // r0 = cookie(skb->sk)
        insn(STX_DW, 10, 0, -8, 0),                 // *(u64 *)(fp - 8) = r0
        insn(MOV64_REG, 1, 6, 0, 0),                // r1 = skb
        insn(LD_IMM64, 2, PSEUDO_MAP_FD, 0, peers), // r2 = &peers
        insn(0, 0, 0, 0, 0),                        //   (second half)
        insn(MOV64_REG, 3, 10, 0, 0),               // r3 = fp
        insn(ADD64_IMM, 3, 0, 0, -8),               // r3 = &key
        insn(MOV64_IMM, 4, 0, 0, 0),                // r4 = 0: to the peer's egress
        insn(CALL, 0, 0, 0, SK_REDIRECT_HASH),      // r0 = SK_PASS or SK_DROP
        insn(EXIT, 0, 0, 0, 0),
    ];
    let license = b"Apache-2.0\0";
    let load = |log: &mut [u8]| {
        let mut attr = ProgLoad {
            prog_type: BPF_PROG_TYPE_SK_SKB,
            insn_cnt: program.len() as u32,
            insns: program.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: log.as_mut_ptr() as u64,
            kern_version: 0,
            prog_flags: 0,
            prog_name: name("pgw_verdict"),
        };
        bpf(BPF_PROG_LOAD, &mut attr).map(owned)
    };
    load(&mut []).or_else(|err| {
        // Again with the verifier's log, to say why.
        let mut log = vec![0u8; 64 * 1024];
        load(&mut log).map_err(|_| {
            let text = String::from_utf8_lossy(&log);
            let text = text.trim_end_matches('\0').trim();
            io::Error::new(err.kind(), format!("{err}; verifier: {text}"))
        })
    })
}

fn attach(map: RawFd, program: RawFd) -> io::Result<()> {
    let mut attr = ProgAttach {
        target_fd: map as u32,
        attach_bpf_fd: program as u32,
        attach_type: BPF_SK_SKB_STREAM_VERDICT,
        attach_flags: 0,
    };
    bpf(BPF_PROG_ATTACH, &mut attr).map(drop)
}
