//! `[backup]`: a directory or an S3 bucket, and the located errors.

use super::*;

fn with_backup(table: &str) -> String {
    format!("{MINIMAL}\n[backup]\n{table}")
}

#[test]
fn no_backup_table_means_no_archive() {
    let fx = Fixture::new();
    assert_eq!(fx.parse(MINIMAL).unwrap().backup, None);
    assert!(!fx
        .parse(MINIMAL)
        .unwrap()
        .effective_toml()
        .contains("[backup]"));
}

#[test]
fn a_directory_repository() {
    let fx = Fixture::new();
    let c = fx
        .parse(&with_backup("repository = \"/mnt/backup\"\n"))
        .unwrap();
    assert_eq!(
        c.backup.as_ref().unwrap().repository,
        Repository::Directory("/mnt/backup".into())
    );
    assert!(
        c.effective_toml()
            .ends_with("\n[backup]\nrepository = \"/mnt/backup\"\n"),
        "{}",
        c.effective_toml()
    );
}

#[test]
fn an_s3_repository_with_every_key() {
    let fx = Fixture::new();
    fs::write(fx.dir.path().join("s3.credentials"), "[pg]\n").unwrap();
    fs::write(fx.dir.path().join("s3-ca.pem"), "x").unwrap();
    let c = fx
        .parse(&with_backup(
            "repository = \"s3://pg-backups/clusters/main/\"\n\
             s3_endpoint = \"https://minio.example.com:9000/\"\n\
             s3_region = \"eu-west-1\"\n\
             s3_credentials_file = \"{dir}/s3.credentials\"\n\
             s3_profile = \"pg\"\n\
             s3_ca_file = \"{dir}/s3-ca.pem\"\n",
        ))
        .unwrap();
    let backup = c.backup.as_ref().unwrap();
    assert_eq!(
        backup.repository,
        Repository::S3(S3 {
            bucket: "pg-backups".into(),
            prefix: "clusters/main".into(),
            endpoint: Some("https://minio.example.com:9000".into()),
            region: "eu-west-1".into(),
            credentials_file: Some(fx.dir.path().join("s3.credentials")),
            profile: "pg".into(),
            ca_file: Some(fx.dir.path().join("s3-ca.pem")),
        })
    );
    assert_eq!(
        backup.repository.to_string(),
        "s3://pg-backups/clusters/main"
    );
    let shown = c.effective_toml().replace(&fx.dir(), "{dir}");
    assert!(
        shown.ends_with(
            "\n[backup]\nrepository = \"s3://pg-backups/clusters/main\"\n\
             s3_endpoint = \"https://minio.example.com:9000\"\n\
             s3_region = \"eu-west-1\"\n\
             s3_credentials_file = \"{dir}/s3.credentials\"\n\
             s3_profile = \"pg\"\n\
             s3_ca_file = \"{dir}/s3-ca.pem\"\n"
        ),
        "{shown}"
    );
}

#[test]
fn s3_defaults_are_aws_the_environment_and_the_buckets_root() {
    let fx = Fixture::new();
    let c = fx
        .parse(&with_backup("repository = \"s3://pg-backups\"\n"))
        .unwrap();
    let Repository::S3(s3) = &c.backup.as_ref().unwrap().repository else {
        panic!("an S3 repository");
    };
    assert_eq!(s3.prefix, "");
    assert_eq!(s3.endpoint, None);
    assert_eq!(s3.region, "us-east-1");
    assert_eq!(s3.credentials_file, None);
    assert_eq!(s3.profile, "default");
}

#[test]
fn bad_repositories_are_located() {
    let fx = Fixture::new();
    let cases = [
        (
            "s3_region = \"eu-west-1\"\n",
            "pgwarden.toml:12:1: missing required key `repository` in [backup]\n  \
             hint: add e.g. repository = \"/mnt/backup\"",
        ),
        (
            "repository = \"backup\"\n",
            "pgwarden.toml:13:14: `backup.repository` must be an absolute path, found \"backup\"\n  \
             hint: write the full path, starting with /; relative paths would depend on the working directory",
        ),
        (
            "repository = \"{dir}/data/backup\"\n",
            "pgwarden.toml:13:14: `backup.repository` {dir}/data/backup is inside member.data_dir\n  \
             hint: keep the repository off this server's data directory (it would be lost with it): \
             use another disk or, better, a share of another host",
        ),
        (
            "repository = \"gs://bucket\"\n",
            "pgwarden.toml:13:14: `backup.repository` \"gs://bucket\" is neither a directory nor an s3:// URL\n  \
             hint: write a directory, e.g. repository = \"/mnt/backup\", or an S3 bucket and prefix, \
             e.g. repository = \"s3://backups/pg-main\"",
        ),
        (
            "repository = \"s3://Backups/x\"\n",
            "pgwarden.toml:13:14: invalid bucket \"Backups\" in `backup.repository`: `B` is not allowed\n  \
             hint: S3 bucket names have 3 to 63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit",
        ),
        (
            "repository = \"s3://backups/a//b\"\n",
            "pgwarden.toml:13:14: invalid prefix \"a//b\" in `backup.repository`: it has an empty name between two '/'\n  \
             hint: write the prefix as names of letters, digits, '.', '_' and '-' separated by single '/', e.g. \"s3://backups/pg/main\"",
        ),
        (
            "repository = \"/mnt/backup\"\ns3_region = \"eu-west-1\"\n",
            "pgwarden.toml:14:1: `backup.s3_region` is set but `backup.repository` is a directory\n  \
             hint: the s3_* keys are for repository = \"s3://bucket/prefix\"; remove them for a directory",
        ),
        (
            "repository = \"s3://backups\"\ns3_endpoint = \"minio:9000\"\n",
            "pgwarden.toml:14:15: invalid `backup.s3_endpoint` \"minio:9000\": it does not start with http:// or https://\n  \
             hint: write scheme://host[:port] of the S3-compatible server, e.g. \"https://minio.example.com:9000\"; leave it out for AWS",
        ),
        (
            "repository = \"s3://backups\"\ns3_profile = \"pg\"\n",
            "pgwarden.toml:14:1: `backup.s3_profile` is set but `backup.s3_credentials_file` is not\n  \
             hint: name the credentials file the profile is in, or remove s3_profile to use the AWS environment",
        ),
        (
            "repository = \"s3://backups\"\ns3_credentials_file = \"{dir}/none\"\n",
            "pgwarden.toml:14:23: `backup.s3_credentials_file` {dir}/none does not exist or is not a file\n  \
             hint: correct the path, or create the file before starting pgwarden",
        ),
        (
            "repository = \"s3://backups\"\ns3_endpoint = \"http://10.0.0.9:9000\"\ns3_ca_file = \"{dir}/superuser.password\"\n",
            "pgwarden.toml:15:1: `backup.s3_ca_file` is set but `backup.s3_endpoint` uses http://\n  \
             hint: write the endpoint with https:// to check the server's certificate, or remove s3_ca_file",
        ),
        (
            "repository = \"s3://backups\"\nregion = \"eu-west-1\"\n",
            "pgwarden.toml:14:1: unknown key `region` in [backup]\n  \
             hint: expected one of: repository, s3_endpoint, s3_region, s3_credentials_file, s3_profile, s3_ca_file, retention_full, retention_window, replica_from",
        ),
    ];
    for (table, expected) in cases {
        assert_eq!(fx.error(&with_backup(table)), expected, "for {table}");
    }
}

#[test]
fn load_backup_reads_no_secret_and_needs_no_postgres() {
    let fx = Fixture::new();
    // The password file is gone and bin_dir names nothing: `wal push`
    // does not care.
    let source = with_backup("repository = \"/mnt/backup\"\n")
        .replace("{dir}/superuser.password", "{dir}/gone.password")
        .replace("{dir}/bin", "{dir}/no-bin")
        .replace("{dir}", &fx.dir());
    let file = fx.dir.path().join("pgwarden.toml");
    fs::write(&file, &source).unwrap();
    assert!(load(&file).is_err());
    assert_eq!(
        load_backup(&file).unwrap().unwrap().repository,
        Repository::Directory("/mnt/backup".into())
    );
    fs::write(&file, MINIMAL).unwrap();
    assert_eq!(load_backup(&file).unwrap(), None);
    // Still the same file: unknown keys and bad values are refused.
    fs::write(&file, with_backup("repository = \"relative\"\n")).unwrap();
    let err = load_backup(&file).unwrap_err().to_string();
    assert!(err.contains("must be an absolute path"), "{err}");
    fs::write(&file, format!("{MINIMAL}\nbogus = 1\n")).unwrap();
    assert!(load_backup(&file).is_err());
}

#[test]
fn archive_settings_are_pgwardens_own() {
    let fx = Fixture::new();
    for name in [
        "archive_mode",
        "archive_command",
        "archive_library",
        "restore_command",
        "Archive_Command",
    ] {
        assert_eq!(
            fx.error(&format!(
                "{MINIMAL}\n[postgresql.parameters]\n{name} = \"cp %p /x/%f\"\n"
            )),
            format!(
                "pgwarden.toml:13:1: `{name}` in [postgresql.parameters] is managed by pgwarden\n  \
                 hint: pgwarden archives WAL itself (`pgwarden wal push`, `wal fetch`): \
                 set a repository in pgwarden.toml [backup] (docs/backup.md)"
            )
        );
    }
    // The dynamic configuration asks the same question.
    assert!(crate::managed_parameter("restore_command").is_some());
    assert!(crate::managed_parameter("archive_timeout").is_none());
}

#[test]
fn retention_keeps_two_full_backups_unless_told_otherwise() {
    let fx = Fixture::new();
    let c = fx
        .parse(&with_backup("repository = \"/mnt/backup\"\n"))
        .unwrap();
    assert_eq!(
        c.backup.as_ref().unwrap().retention,
        crate::Retention {
            full: 2,
            window: None
        }
    );
    let c = fx
        .parse(&with_backup(
            "repository = \"/mnt/backup\"\nretention_full = 4\nretention_window = \"7d\"\n",
        ))
        .unwrap();
    assert_eq!(
        c.backup.as_ref().unwrap().retention,
        crate::Retention {
            full: 4,
            window: Some(std::time::Duration::from_secs(7 * 86_400))
        }
    );
    assert!(
        c.effective_toml()
            .ends_with("retention_full = 4\nretention_window = \"7d\"\n"),
        "{}",
        c.effective_toml()
    );
}

#[test]
fn bad_retention_is_located() {
    let fx = Fixture::new();
    for (table, expected) in [
        (
            "repository = \"/mnt/backup\"\nretention_full = 0\n",
            "pgwarden.toml:14:18: `backup.retention_full` = 0 is out of range\n  \
             hint: keep 1 to 1000 full backups (the newest one is always kept)",
        ),
        (
            "repository = \"/mnt/backup\"\nretention_window = \"1w\"\n",
            "pgwarden.toml:14:20: invalid duration for `backup.retention_window`: \"1w\" has an unknown unit `w`",
        ),
    ] {
        let err = fx.parse(&with_backup(table)).unwrap_err().to_string();
        assert!(err.starts_with(expected), "{err}");
    }
}

#[test]
fn standbys_come_from_a_backup_first_unless_told_otherwise() {
    use crate::ReplicaMethod::{Backup, Primary};
    let fx = Fixture::new();
    let c = fx
        .parse(&with_backup("repository = \"/mnt/backup\"\n"))
        .unwrap();
    assert_eq!(c.backup.as_ref().unwrap().replica_from, [Backup, Primary]);
    assert!(!c.effective_toml().contains("replica_from"));
    for (written, expected) in [
        ("[\"primary\"]", vec![Primary]),
        ("[\"backup\"]", vec![Backup]),
        ("[\"primary\", \"backup\"]", vec![Primary, Backup]),
    ] {
        let c = fx
            .parse(&with_backup(&format!(
                "repository = \"/mnt/backup\"\nreplica_from = {written}\n"
            )))
            .unwrap();
        assert_eq!(c.backup.as_ref().unwrap().replica_from, expected);
        assert!(
            c.effective_toml()
                .ends_with(&format!("replica_from = {written}\n")),
            "{}",
            c.effective_toml()
        );
    }
}

#[test]
fn bad_replica_methods_are_located() {
    let fx = Fixture::new();
    let hint = "hint: list the methods in the order to try them: \"backup\" (restore the newest \
                backup from the repository, then replay the archive) and \"primary\" (pg_basebackup \
                from the member it will stream from), e.g. replica_from = [\"backup\", \"primary\"] \
                (the default)";
    for (written, expected) in [
        (
            "[]",
            format!(
                "pgwarden.toml:14:16: `backup.replica_from` is empty: a new standby would have \
                 no way to get its data\n  {hint}"
            ),
        ),
        (
            "[\"backup\", \"basebackup\"]",
            format!(
                "pgwarden.toml:14:16: `backup.replica_from` has \"basebackup\", which is not a \
                 way to build a standby\n  {hint}"
            ),
        ),
        (
            "[\"primary\", \"primary\"]",
            "pgwarden.toml:14:16: `backup.replica_from` lists \"primary\" twice\n  \
             hint: name each method once: a failed method is not tried again"
                .to_string(),
        ),
    ] {
        let table = format!("repository = \"/mnt/backup\"\nreplica_from = {written}\n");
        assert_eq!(fx.error(&with_backup(&table)), expected, "for {written}");
    }
}
