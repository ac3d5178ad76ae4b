//! Forwarding in the kernel: a BPF sockmap redirects what one socket of a
//! pair receives straight to the other's send queue, so the proxy does no
//! per-byte work and is not even woken while a session runs
//! (docs/proxy.md, "Forwarding in the kernel").
//!
//! Two SOCKHASH maps, keyed by socket cookie (a socket's unique 64-bit id):
//! * `peers`: the key is a socket's cookie, the value its *peer* socket. No
//!   program is attached: being in it changes nothing about a socket.
//! * `active`: the key is a socket's own cookie. The verdict program is
//!   attached here, so inserting a socket starts redirecting what it
//!   receives to `peers[its cookie]` (which is already there: no byte can
//!   find its peer missing).
//!
//! The kernel queues redirected bytes for the peer without limit, and TCP's
//! window stays open because the bytes left the receive queue: a client
//! uploading faster than the server reads would pile up in kernel memory.
//! So each socket has a [`Slot`] (an mmap-shared array, found through the
//! `slot_of` hash): the program redirects only while the bytes it redirected
//! stay under a limit, and past it *holds* the direction: it lets every
//! byte through to the socket's own receive queue, where unread bytes close
//! the TCP window as usual. The proxy's sweeper notices a held direction
//! within [`SWEEP`]; the relay waits until the kernel's queue is empty,
//! copies the held bytes in order, raises the limit and lets the kernel go
//! on (`relay::catch_up`). Fewer than [`WINDOW`] bytes are ever queued.
//!
//! The program is hand-assembled and loaded with bpf(2); no BPF toolchain
//! or library is needed. A socket leaves the sockhashes when it is closed
//! (the kernel unlinks it); its slot is freed when its [`Pair`] is dropped.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::tcp;

/// Pairs the kernel can hold at once; one more falls back to user space.
const MAX_PAIRS: u32 = 32 * 1024;
/// The most bytes of one direction the kernel may have taken from one
/// socket and not yet put into the other's send queue.
pub const WINDOW: u64 = 4 << 20;
/// How often the sweeper looks for held directions while pairs run.
pub const SWEEP: Duration = Duration::from_millis(5);
/// Slots for sockets; one more after them counts holds (in its first
/// field), so the sweeper walks the slots only when something was held.
const SOCKET_SLOTS: u32 = 2 * MAX_PAIRS;
const HOLDS: u32 = SOCKET_SLOTS;

// bpf(2) commands, map and program types (include/uapi/linux/bpf.h).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_SOCKHASH: u32 = 18;
const BPF_PROG_TYPE_SK_SKB: u32 = 14;
const BPF_SK_SKB_STREAM_VERDICT: u32 = 5;
const BPF_NOEXIST: u64 = 1;
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// One direction's accounting, shared with the program. The program writes
/// `redirected` and `held`, the proxy `limit` and `released`.
#[repr(C)]
#[derive(Debug)]
pub struct Slot {
    /// Redirecting may go on while `redirected` stays at or under it.
    limit: AtomicU64,
    /// Bytes redirected to the peer since the hand-over.
    redirected: AtomicU64,
    /// Bytes let through to user space since the hand-over.
    held: AtomicU64,
    /// How many of the held bytes user space has passed on. While it is
    /// short of `held`, every new byte is held too (order).
    released: AtomicU64,
}

// Field offsets the program uses.
const LIMIT: i16 = 0;
const REDIRECTED: i16 = 8;
const HELD: i16 = 16;
const RELEASED: i16 = 24;

impl Slot {
    pub fn redirected(&self) -> u64 {
        self.redirected.load(Ordering::Acquire)
    }

    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// Whether the program is holding this direction's bytes for user space.
    pub fn is_held(&self) -> bool {
        self.held() != self.released.load(Ordering::Acquire)
    }

    /// Lets the kernel forward again once user space has passed on
    /// `released` held bytes, with room for [`WINDOW`] more from the
    /// (drained) `redirected`. The limit goes first: the program reads it
    /// only after it sees the direction released.
    pub fn release(&self, released: u64, redirected: u64) {
        self.limit.store(redirected + WINDOW, Ordering::Release);
        self.released.store(released, Ordering::Release);
    }

    fn reset(&self) {
        self.redirected.store(0, Ordering::Relaxed);
        self.held.store(0, Ordering::Relaxed);
        self.released.store(0, Ordering::Relaxed);
        self.limit.store(WINDOW, Ordering::Release);
    }
}

/// The slot array, mapped into the proxy.
#[derive(Debug)]
struct Slots {
    map: OwnedFd,
    base: *mut Slot,
    bytes: usize,
}

// SAFETY: the mapping is only accessed through the atomics of `Slot`.
unsafe impl Send for Slots {}
unsafe impl Sync for Slots {}

impl Slots {
    fn create() -> io::Result<Slots> {
        let map = create(
            BPF_MAP_TYPE_ARRAY,
            4,
            std::mem::size_of::<Slot>() as u32,
            SOCKET_SLOTS + 1,
            BPF_F_MMAPABLE,
            "pgw_slots",
        )?;
        let bytes = std::mem::size_of::<Slot>() * (SOCKET_SLOTS + 1) as usize;
        // SAFETY: maps the array map's values (the kernel allows shared
        // read-write mappings of a BPF_F_MMAPABLE array); checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Slots {
            map,
            base: base.cast(),
            bytes,
        })
    }

    fn get(&self, index: u32) -> &Slot {
        assert!(index <= HOLDS);
        // SAFETY: in bounds of the mapping, which lives as long as self;
        // Slot is all atomics, so shared access is sound.
        unsafe { &*self.base.add(index as usize) }
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `create` mapped; no reference outlives
        // self (slots are borrowed from it).
        unsafe { libc::munmap(self.base.cast(), self.bytes) };
    }
}

/// What the sweeper and the pairs share.
#[derive(Debug)]
struct Shared {
    slots: Slots,
    /// Free slot indices.
    free: Mutex<Vec<u32>>,
    /// Every slot in use and its pair's wake-up.
    running: Mutex<BTreeMap<u32, Arc<Notify>>>,
    /// Wakes the sweeper when the first pair starts.
    started: Notify,
}

/// The maps and the program, shared by every connection of the proxy.
#[derive(Debug)]
pub struct Kernel {
    peers: OwnedFd,
    active: OwnedFd,
    slot_of: OwnedFd,
    shared: Arc<Shared>,
    sweeper: tokio::task::JoinHandle<()>,
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
                "the kernel lacks BPF sockmap support (CONFIG_BPF_SYSCALL, CONFIG_BPF_STREAM_PARSER, Linux 5.13 or later); set proxy.kernel_forwarding = false to silence this"
            }
        }
    }
}

impl Kernel {
    /// Creates the maps, loads and attaches the verdict program, and starts
    /// the sweeper (on the current tokio runtime).
    pub fn load() -> Result<Kernel, Unavailable> {
        let fail = |step| move |io| Unavailable { step, io };
        let sockhash = |name| create(BPF_MAP_TYPE_SOCKHASH, 8, 4, 2 * MAX_PAIRS, 0, name);
        let peers = sockhash("pgw_peers").map_err(fail("create the peers map"))?;
        let active = sockhash("pgw_active").map_err(fail("create the active map"))?;
        let slot_of = create(BPF_MAP_TYPE_HASH, 8, 4, 2 * MAX_PAIRS, 0, "pgw_slot_of")
            .map_err(fail("create the slot index"))?;
        let slots = Slots::create().map_err(fail("create and map the slots"))?;
        let verdict = load_verdict(&Maps {
            peers: peers.as_raw_fd(),
            slot_of: slot_of.as_raw_fd(),
            slots: slots.map.as_raw_fd(),
        })
        .map_err(fail("load the verdict program"))?;
        attach(active.as_raw_fd(), verdict.as_raw_fd())
            .map_err(fail("attach the verdict program"))?;
        let shared = Arc::new(Shared {
            slots,
            free: Mutex::new((0..SOCKET_SLOTS).rev().collect()),
            running: Mutex::new(BTreeMap::new()),
            started: Notify::new(),
        });
        let sweeper = tokio::spawn(sweep(shared.clone()));
        Ok(Kernel {
            peers,
            active,
            slot_of,
            shared,
            sweeper,
            _verdict: verdict,
        })
    }

    /// Hands a connected pair to the kernel. Every byte either socket has
    /// received and user space has not read, and every byte it receives
    /// from now on, goes to the other, in order, or is held for the
    /// relay (see [`Slot`]). The caller must have written everything it
    /// read and must read either socket only for held bytes.
    ///
    /// `Err(Refused)` leaves the pair as it was (e.g. the maps are full):
    /// forward it in user space. `Err(Broken)` means forwarding may have
    /// begun: the pair can only be closed.
    pub fn join(&self, a: RawFd, b: RawFd) -> Result<Pair<'_>, JoinError<'_>> {
        let (ka, kb) = (
            tcp::cookie(a).map_err(JoinError::Refused)?,
            tcp::cookie(b).map_err(JoinError::Refused)?,
        );
        let mut pair = Pair {
            kernel: self,
            slots: [None, None],
            cookies: [None, None],
            wakes: [Arc::new(Notify::new()), Arc::new(Notify::new())],
        };
        for (i, cookie) in [ka, kb].into_iter().enumerate() {
            let slot = self
                .shared
                .take_slot()
                .ok_or_else(|| JoinError::Refused(io::Error::other("every slot is in use")))?;
            pair.slots[i] = Some(slot);
            self.shared.slots.get(slot).reset();
            update(&self.slot_of, cookie, slot, BPF_NOEXIST).map_err(JoinError::Refused)?;
            pair.cookies[i] = Some(cookie);
        }
        // Peers first: no program runs for them yet.
        update(&self.peers, ka, b as u32, BPF_NOEXIST).map_err(JoinError::Refused)?;
        // A half-entered pair is simply not used: `peers[ka]` redirects
        // nothing while `a` is not active, and closing removes it.
        update(&self.peers, kb, a as u32, BPF_NOEXIST).map_err(JoinError::Refused)?;
        pair.run();
        let started = update(&self.active, ka, a as u32, BPF_NOEXIST)
            .and_then(|()| update(&self.active, kb, b as u32, BPF_NOEXIST))
            // Bytes that arrived before a socket became active wait in its
            // receive queue; this runs them through the program, ahead of
            // anything newer.
            .and_then(|()| tcp::nudge(a))
            .and_then(|()| tcp::nudge(b));
        match started {
            Ok(()) => Ok(pair),
            Err(err) => Err(JoinError::Broken(err, pair)),
        }
    }

    /// Tries what every connection does with the maps (enter a socket,
    /// remove it, read the index) on a throwaway loopback pair: whether it
    /// works with the capabilities this thread has now.
    pub fn try_maps(&self) -> io::Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let a = std::net::TcpStream::connect(listener.local_addr()?)?;
        let (b, _) = listener.accept()?;
        let key = tcp::cookie(a.as_raw_fd())?;
        // `peers` runs no program: entering a socket there changes nothing.
        update(&self.peers, key, b.as_raw_fd() as u32, BPF_NOEXIST)?;
        delete(&self.peers, key)?;
        update(&self.slot_of, key, 0, BPF_NOEXIST)?;
        delete(&self.slot_of, key)?;
        count_keys(&self.active).map(drop)
    }

    /// How many sockets the active map holds now (for tests: a closed
    /// connection must leave none behind).
    pub fn active_sockets(&self) -> io::Result<usize> {
        count_keys(&self.active)
    }

    /// How many slots are in use (for tests, as above).
    pub fn slots_in_use(&self) -> usize {
        let free = self.shared.free.lock().unwrap_or_else(|e| e.into_inner());
        SOCKET_SLOTS as usize - free.len()
    }
}

impl Shared {
    fn take_slot(&self) -> Option<u32> {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }
}

/// A pair in the kernel: its slots, freed on drop.
#[derive(Debug)]
pub struct Pair<'k> {
    kernel: &'k Kernel,
    slots: [Option<u32>; 2],
    /// Cookies entered in `slot_of`.
    cookies: [Option<u64>; 2],
    /// Each direction's wake-up, for the sweeper.
    wakes: [Arc<Notify>; 2],
}

impl Pair<'_> {
    /// The slot of the direction from socket `i` (0 = `a`, 1 = `b`).
    pub fn slot(&self, i: usize) -> &Slot {
        let index = self.slots[i].expect("a joined pair has both slots");
        self.kernel.shared.slots.get(index)
    }

    /// Resolves when the direction from socket `i` may be held (spurious
    /// wakes happen).
    pub async fn wait_held(&self, i: usize) {
        self.wakes[i].notified().await
    }

    fn run(&self) {
        let mut running = self
            .kernel
            .shared
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (slot, wake) in self.slots.iter().zip(&self.wakes) {
            if let Some(slot) = slot {
                running.insert(*slot, wake.clone());
            }
        }
        self.kernel.shared.started.notify_one();
    }
}

impl Drop for Pair<'_> {
    fn drop(&mut self) {
        // A reused slot is safe because the caller closed both sockets
        // first: a closed socket runs no program. Out of the index anyway,
        // so the hash does not fill up.
        for cookie in self.cookies.into_iter().flatten() {
            if let Err(err) = delete(&self.kernel.slot_of, cookie) {
                tracing::warn!(
                    "proxy: cannot remove a closed connection from the kernel's slot index: {err}"
                );
            }
        }
        let shared = &self.kernel.shared;
        let mut running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut free = shared.free.lock().unwrap_or_else(|e| e.into_inner());
        for slot in self.slots.into_iter().flatten() {
            running.remove(&slot);
            free.push(slot);
        }
    }
}

/// Wakes the pairs whose program holds a direction, every [`SWEEP`] while
/// any pair runs and something was held since the last look; aborted with
/// the proxy.
async fn sweep(shared: Arc<Shared>) {
    let holds = shared.slots.get(HOLDS);
    let mut seen = 0;
    loop {
        let idle = {
            let now = holds.limit.load(Ordering::Acquire);
            let running = shared.running.lock().unwrap_or_else(|e| e.into_inner());
            if now != seen {
                seen = now;
                for (slot, wake) in running.iter() {
                    if shared.slots.get(*slot).is_held() {
                        wake.notify_one();
                    }
                }
            }
            running.is_empty()
        };
        if idle {
            // A pair that started since the look left a permit.
            shared.started.notified().await;
        } else {
            tokio::time::sleep(SWEEP).await;
        }
    }
}

impl Drop for Kernel {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

#[derive(Debug)]
pub enum JoinError<'k> {
    Refused(io::Error),
    /// The pair's slots stay taken until the caller has closed both
    /// sockets and then drops the pair.
    Broken(io::Error, Pair<'k>),
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

fn create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    map_name: &str,
) -> io::Result<OwnedFd> {
    let mut attr = MapCreate {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
        inner_map_fd: 0,
        numa_node: 0,
        map_name: name(map_name),
    };
    bpf(BPF_MAP_CREATE, &mut attr).map(owned)
}

/// Sets `map[key] = value`: a socket descriptor for a sockhash, a slot index
/// for `slot_of`.
fn update(map: &OwnedFd, key: u64, value: u32, flags: u64) -> io::Result<()> {
    let mut attr = MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u64 as u64,
        value: &value as *const u32 as u64,
        flags,
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

fn delete(map: &OwnedFd, key: u64) -> io::Result<()> {
    let mut attr = MapElem {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: &key as *const u64 as u64,
        value: 0,
        flags: 0,
    };
    bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(drop)
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
const ADD64_REG: u8 = 0x0f;
const STX_DW: u8 = 0x7b;
const STX_W: u8 = 0x63;
const ST_W: u8 = 0x62;
const LDX_DW: u8 = 0x79;
const LDX_W: u8 = 0x61;
const JEQ_IMM: u8 = 0x15;
const JNE_IMM: u8 = 0x55;
const JNE_REG: u8 = 0x5d;
const JGT_REG: u8 = 0x2d;
const LD_IMM64: u8 = 0x18;
const ATOMIC_DW: u8 = 0xdb;
/// The immediate of ATOMIC_DW for a fetch-and-add (the old value lands in
/// the source register; a fetching atomic is fully ordered).
const FETCH_ADD: i32 = 0x01;
const CALL: u8 = 0x85;
const EXIT: u8 = 0x95;
/// src_reg of LD_IMM64 saying "the immediate is a map file descriptor".
const PSEUDO_MAP_FD: u8 = 1;
const SK_DROP: i32 = 0;
const SK_PASS: i32 = 1;
// Helper function ids.
const MAP_LOOKUP_ELEM: i32 = 1;
const GET_SOCKET_COOKIE: i32 = 46;
const SK_REDIRECT_HASH: i32 = 72;

/// The maps the program refers to.
struct Maps {
    peers: RawFd,
    slot_of: RawFd,
    slots: RawFd,
}

/// The verdict, in C:
///
/// ```c
/// int verdict(struct __sk_buff *skb) {
///     __u32 len = skb->len;
///     if (len == 0)
///         return SK_DROP;
///     __u64 key = bpf_get_socket_cookie(skb);
///     __u32 *index = bpf_map_lookup_elem(&slot_of, &key);
///     if (!index)
///         return SK_PASS;
///     struct slot *s = bpf_map_lookup_elem(&slots, index);
///     if (!s)
///         return SK_PASS;
///     if (s->held != s->released || s->redirected + len > s->limit) {
///         __sync_fetch_and_add(&s->held, len);
///         __u32 holds_index = HOLDS;
///         struct slot *holds = bpf_map_lookup_elem(&slots, &holds_index);
///         if (holds)
///             __sync_fetch_and_add(&holds->limit, 1);  /* for the sweeper */
///         return SK_PASS;              /* to the socket's own receive queue */
///     }
///     s->redirected += len;
///     return bpf_sk_redirect_hash(skb, &peers, &key, 0 /* egress */);
/// }
/// ```
///
/// An empty skb is a bare FIN: redirected, the kernel's sender takes its
/// zero-byte send for a broken pipe and fails the peer socket (EPIPE).
/// The end is passed on by `relay` instead. A missing peer (only while a
/// pair is being closed) drops the bytes; without a slot (likewise) they
/// go to the socket's own receive queue, which nobody reads any more.
fn load_verdict(maps: &Maps) -> io::Result<OwnedFd> {
    const HOLD: i16 = 38;
    const PASS: i16 = 48;
    // A jump's offset counts from the instruction after it.
    const fn to(target: i16, from: i16) -> i16 {
        target - from - 1
    }
    let program = [
        insn(LDX_W, 7, 1, 0, 0),                           // 0: r7 = skb->len
        insn(JNE_IMM, 7, 0, 2, 0),                         // 1: if r7 != 0 skip 2
        insn(MOV64_IMM, 0, 0, 0, SK_DROP),                 // 2: r0 = SK_DROP
        insn(EXIT, 0, 0, 0, 0),                            // 3:
        insn(MOV64_REG, 6, 1, 0, 0),                       // 4: r6 = skb
        insn(CALL, 0, 0, 0, GET_SOCKET_COOKIE),            // 5: r0 = cookie(skb->sk)
        insn(STX_DW, 10, 0, -8, 0),                        // 6: key = r0 (fp - 8)
        insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, maps.slot_of), // 7: r1 = &slot_of
        insn(0, 0, 0, 0, 0),                               // 8:   (second half)
        insn(MOV64_REG, 2, 10, 0, 0),                      // 9: r2 = fp
        insn(ADD64_IMM, 2, 0, 0, -8),                      // 10: r2 = &key
        insn(CALL, 0, 0, 0, MAP_LOOKUP_ELEM),              // 11: r0 = &slot_of[key]
        insn(JEQ_IMM, 0, 0, to(PASS, 12), 0),              // 12: if !r0 pass
        insn(LDX_W, 1, 0, 0, 0),                           // 13: r1 = *r0
        insn(STX_W, 10, 1, -12, 0),                        // 14: index = r1 (fp - 12)
        insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, maps.slots),   // 15: r1 = &slots
        insn(0, 0, 0, 0, 0),                               // 16:   (second half)
        insn(MOV64_REG, 2, 10, 0, 0),                      // 17: r2 = fp
        insn(ADD64_IMM, 2, 0, 0, -12),                     // 18: r2 = &index
        insn(CALL, 0, 0, 0, MAP_LOOKUP_ELEM),              // 19: r0 = &slots[index]
        insn(JEQ_IMM, 0, 0, to(PASS, 20), 0),              // 20: if !r0 pass
        insn(MOV64_REG, 8, 0, 0, 0),                       // 21: r8 = s
        insn(LDX_DW, 1, 8, HELD, 0),                       // 22: r1 = s->held
        insn(LDX_DW, 2, 8, RELEASED, 0),                   // 23: r2 = s->released
        insn(JNE_REG, 1, 2, to(HOLD, 24), 0),              // 24: if r1 != r2 hold
        insn(LDX_DW, 1, 8, REDIRECTED, 0),                 // 25: r1 = s->redirected
        insn(ADD64_REG, 1, 7, 0, 0),                       // 26: r1 += len
        insn(LDX_DW, 2, 8, LIMIT, 0),                      // 27: r2 = s->limit
        insn(JGT_REG, 1, 2, to(HOLD, 28), 0),              // 28: if r1 > r2 hold
        insn(STX_DW, 8, 1, REDIRECTED, 0),                 // 29: s->redirected = r1
        insn(MOV64_REG, 1, 6, 0, 0),                       // 30: r1 = skb
        insn(LD_IMM64, 2, PSEUDO_MAP_FD, 0, maps.peers),   // 31: r2 = &peers
        insn(0, 0, 0, 0, 0),                               // 32:   (second half)
        insn(MOV64_REG, 3, 10, 0, 0),                      // 33: r3 = fp
        insn(ADD64_IMM, 3, 0, 0, -8),                      // 34: r3 = &key
        insn(MOV64_IMM, 4, 0, 0, 0),                       // 35: r4 = 0: the peer's egress
        insn(CALL, 0, 0, 0, SK_REDIRECT_HASH),             // 36: r0 = SK_PASS or SK_DROP
        insn(EXIT, 0, 0, 0, 0),                            // 37:
        // An atomic add: ordered after the `redirected` stores before it,
        // which the relay reads once it sees `held` move (arm64 reorders
        // plain stores).
        insn(ATOMIC_DW, 8, 7, HELD, FETCH_ADD), // 38 HOLD: s->held += len
        insn(LD_IMM64, 1, PSEUDO_MAP_FD, 0, maps.slots), // 39: r1 = &slots
        insn(0, 0, 0, 0, 0),                    // 40:   (second half)
        insn(ST_W, 10, 0, -16, HOLDS as i32),   // 41: holds_index (fp - 16)
        insn(MOV64_REG, 2, 10, 0, 0),           // 42: r2 = fp
        insn(ADD64_IMM, 2, 0, 0, -16),          // 43: r2 = &holds_index
        insn(CALL, 0, 0, 0, MAP_LOOKUP_ELEM),   // 44: r0 = &slots[HOLDS]
        insn(JEQ_IMM, 0, 0, to(PASS, 45), 0),   // 45: if !r0 pass
        insn(MOV64_IMM, 1, 0, 0, 1),            // 46: r1 = 1
        insn(ATOMIC_DW, 0, 1, LIMIT, FETCH_ADD), // 47: holds->limit += 1
        insn(MOV64_IMM, 0, 0, 0, SK_PASS),      // 48 PASS: r0 = SK_PASS
        insn(EXIT, 0, 0, 0, 0),                 // 49:
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
