//! The live status table: one line per member, from what the agents
//! publish in the store. On a terminal it is redrawn in place; in a file or
//! pipe only the lines that changed are printed, so a log of the demo reads
//! as a story instead of a flood.

use std::io::Write;

use store::cluster::{MemberStatus, PgState, Role};
use store::ClusterRecords;

use super::terminal::{fit, Colour, Terminal};

const SPINNER: [char; 4] = ['|', '/', '-', '\\'];

/// One member as the table shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub name: String,
    pub role: String,
    pub state: String,
    pub detail: String,
    pub busy: bool,
    pub colour: Colour,
}

/// The rows for `members`, from one read of the store.
pub fn rows(records: &ClusterRecords, members: &[String]) -> Vec<Row> {
    members
        .iter()
        .map(|name| match records.member(name) {
            Some(status) => row(records, status),
            None => Row {
                name: name.clone(),
                role: "-".into(),
                state: "no status".into(),
                detail: "its agent has not published yet, or is down".into(),
                busy: false,
                colour: Colour::Bad,
            },
        })
        .collect()
}

fn row(records: &ClusterRecords, m: &MemberStatus) -> Row {
    let leader = records.leader_name() == Some(m.name.as_str());
    let role = match m.role {
        Role::Primary if leader => "primary",
        Role::Primary => "primary?",
        Role::Replica if records.sync_members().contains(&m.name) => "sync standby",
        Role::Replica => "standby",
        Role::Witness => "witness",
        Role::Unknown => "-",
    };
    let streaming = m.is_streaming_standby();
    let state = match m.state {
        PgState::Running if m.role == Role::Replica && streaming => "streaming".to_string(),
        PgState::Running if m.role == Role::Replica => "not streaming".to_string(),
        state => format!("{state:?}").to_lowercase(),
    };
    let busy = matches!(
        m.state,
        PgState::Bootstrapping
            | PgState::Cloning
            | PgState::Starting
            | PgState::Promoting
            | PgState::Demoting
            | PgState::Rewinding
            | PgState::Stopping
    );
    let healthy = (leader && m.is_running_primary()) || streaming;
    let detail = match (&m.upstream, streaming) {
        (Some(upstream), true) => format!(
            "from {upstream}, {} behind",
            m.lag_bytes.map_or("?".to_string(), bytes)
        ),
        _ if leader && m.is_running_primary() => {
            format!("timeline {}", m.timeline.unwrap_or_default())
        }
        _ => m.note.clone(),
    };
    Row {
        name: m.name.clone(),
        role: role.to_string(),
        state,
        detail,
        busy,
        colour: if healthy {
            Colour::Good
        } else if busy {
            Colour::Busy
        } else {
            Colour::Bad
        },
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n < 1 << 10 => format!("{n} B"),
        n if n < 1 << 20 => format!("{} kB", n >> 10),
        n => format!("{} MB", n >> 20),
    }
}

/// One row as a line of at most `term.width` columns (one less on a live
/// terminal, where a full line would wrap and break the redraw).
pub fn line(row: &Row, term: &Terminal, frame: usize) -> String {
    let mark = if row.busy {
        SPINNER[frame % SPINNER.len()]
    } else {
        ' '
    };
    let width = term.width - usize::from(term.live);
    let head = format!("  {mark} {:<5} {:<13}", row.name, row.role);
    let state = format!("{:<14}", row.state);
    let rest = fit(&format!("{head}{state}{}", row.detail), width);
    // Colour only the state, after fitting: escape codes take no columns.
    match rest.split_once(&state) {
        Some((before, after)) if term.colour => {
            format!("{before}{}{after}", term.paint(&state, row.colour))
        }
        _ => rest,
    }
}

/// Draws the table again and again.
pub struct Board {
    term: Terminal,
    /// Lines drawn last time on a live terminal, to move back over.
    drawn: usize,
    frame: usize,
    last: Vec<Row>,
}

impl Board {
    pub fn new(term: Terminal) -> Board {
        Board {
            term,
            drawn: 0,
            frame: 0,
            last: Vec::new(),
        }
    }

    pub fn draw(&mut self, rows: &[Row]) {
        let mut out = String::new();
        if self.term.live {
            if self.drawn > 0 {
                out += &format!("\x1b[{}A", self.drawn);
            }
            for row in rows {
                out += &format!("\x1b[2K{}\n", line(row, &self.term, self.frame));
            }
            self.drawn = rows.len();
        } else {
            for row in rows {
                if !self.last.contains(row) {
                    out += &line(row, &self.term, 0);
                    out.push('\n');
                }
            }
        }
        self.frame += 1;
        self.last = rows.to_vec();
        print!("{out}");
        let _ = std::io::stdout().flush();
    }

    /// Leaves the last table on the screen; the next one starts below it.
    pub fn done(&mut self) {
        self.drawn = 0;
        self.last.clear();
    }
}

#[cfg(test)]
mod tests {
    use store::cluster::{Leader, SyncSet, Tags};
    use store::Versioned;

    use super::*;

    fn status(name: &str, role: Role, state: PgState, streaming: bool) -> MemberStatus {
        MemberStatus {
            name: name.into(),
            role,
            state,
            timeline: Some(2),
            flush_lsn: None,
            receive_lsn: None,
            replay_lsn: None,
            lag_bytes: Some(0),
            lag_ms: None,
            api_url: String::new(),
            pg_url: String::new(),
            tags: Tags::default(),
            updated_ms: 0,
            upstream: streaming.then(|| "db1".to_string()),
            streaming,
            term: Some(7),
            note: "cloning from db1 with pg_basebackup".into(),
            can_backup: false,
            pending_restart: Vec::new(),
            config_errors: Vec::new(),
            archive: None,
            slots: Vec::new(),
            reachability: None,
        }
    }

    fn versioned<T>(value: T) -> Versioned<T> {
        Versioned {
            value,
            create_revision: 7,
            mod_revision: 7,
            lease: None,
        }
    }

    fn cluster() -> ClusterRecords {
        let mut records = ClusterRecords {
            leader: Some(versioned(Leader {
                member: "db1".into(),
            })),
            sync: Some(versioned(SyncSet {
                leader: "db1".into(),
                members: vec!["db2".into()],
                term: 7,
                quorum: None,
            })),
            ..ClusterRecords::default()
        };
        for s in [
            status("db1", Role::Primary, PgState::Running, false),
            status("db2", Role::Replica, PgState::Running, true),
            status("db3", Role::Replica, PgState::Cloning, false),
        ] {
            records.members.insert(s.name.clone(), versioned(s));
        }
        records
    }

    fn names() -> Vec<String> {
        ["db1", "db2", "db3", "db4"].map(String::from).to_vec()
    }

    #[test]
    fn each_member_reads_as_one_plain_line() {
        let term = Terminal::plain(80);
        let lines: Vec<String> = rows(&cluster(), &names())
            .iter()
            .map(|r| line(r, &term, 1))
            .collect();
        assert_eq!(
            lines,
            [
                "    db1   primary      running       timeline 2",
                "    db2   sync standby streaming     from db1, 0 B behind",
                "  / db3   standby      cloning       cloning from db1 with pg_basebackup",
                "    db4   -            no status     its agent has not published yet, or is down",
            ]
        );
    }

    #[test]
    fn a_narrow_terminal_gets_lines_that_fit() {
        for width in [30, 40, 60] {
            let term = Terminal::plain(width);
            for row in rows(&cluster(), &names()) {
                let text = line(&row, &term, 0);
                assert!(text.chars().count() <= width, "{width}: {text}");
            }
        }
    }
}
