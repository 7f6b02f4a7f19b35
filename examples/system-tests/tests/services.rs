//! Services as users run them: a web server reached by name, and while it is cut off; a
//! database that keeps what it committed across a reboot and a crash.

use std::time::Duration;

use nspawn::{Group, Machine};

fn nginx(m: &Machine) -> nspawn::Result<()> {
    m.succeed("apt-get install -y --no-install-recommends nginx")?;
    m.write("/var/www/html/index.html", "served by web\n")?;
    m.wait_for_unit("nginx.service", m.wait_timeout()).map(drop)
}

fn curl(m: &Machine) -> nspawn::Result<()> {
    m.succeed("apt-get install -y --no-install-recommends curl")?;
    Ok(())
}

const SITE: Group = Group::new(&[("web", "bookworm"), ("client", "bookworm")])
    .network("zone:site+outside")
    .setups(&[("web", nginx), ("client", curl)])
    // The partition test cuts the shared link: nothing else may run meanwhile.
    .serial();

#[nspawn::test(group = SITE)]
fn the_client_fetches_the_page_by_name(client: &Machine, web: &Machine) -> nspawn::Result<()> {
    client.port(80).on(web).wait_open()?;
    assert_eq!(client.succeed("curl -sf http://web/")?, "served by web\n");
    // And the test process reaches it too, at its address.
    web.port(80).from_test().wait_open()?;
    Ok(())
}

#[nspawn::test(group = SITE)]
fn a_cut_off_server_times_out_and_answers_once_back(
    client: &Machine,
    web: &Machine,
) -> nspawn::Result<()> {
    web.block()?;
    let refused = client.fail("curl -sS --max-time 2 http://web/")?;
    assert!(refused.contains("timed out"), "{refused}");
    web.unblock()?;
    let page = client.wait_until_succeeds("curl -sf --max-time 2 http://web/")?;
    assert_eq!(page, "served by web\n");

    // A partition between the two only.
    client.block_from(web)?;
    client.fail("curl -sS --max-time 2 http://web/")?;
    web.port(80).from_test().wait_open()?;
    client.unblock_from(web)?;
    client.wait_until_succeeds("curl -sf --max-time 2 http://web/")?;
    Ok(())
}

fn postgres(m: &Machine) -> nspawn::Result<()> {
    m.succeed("apt-get install -y --no-install-recommends postgresql")?;
    // The cluster's unit comes from a generator: started by name, it need not wait for one.
    m.succeed("systemctl enable --now postgresql@15-main.service")?;
    m.wait_for_unit("postgresql@15-main.service", Duration::from_secs(60))?;
    Ok(())
}

const DB: Group = Group::new(&[("db", "bookworm")])
    .network("zone:db+outside")
    .setups(&[("db", postgres)]);

fn psql(db: &Machine, sql: &str) -> nspawn::Result<String> {
    db.succeed(&format!("runuser -u postgres -- psql -XAtc \"{sql}\""))
}

#[nspawn::test(group = DB)]
fn the_database_keeps_its_data_across_a_reboot_and_a_crash(db: &Machine) -> nspawn::Result<()> {
    psql(
        db,
        "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('before the reboot')",
    )?;
    db.reboot()?;
    db.wait_for_unit("postgresql@15-main.service", Duration::from_secs(60))?;
    assert_eq!(psql(db, "SELECT v FROM kept")?, "before the reboot\n");

    // Committed, then a power cut in the middle of the server's life.
    psql(db, "INSERT INTO kept VALUES ('before the crash')")?;
    db.crash()?;
    db.power_on()?;
    db.wait_for_unit("postgresql@15-main.service", Duration::from_secs(60))?;
    assert_eq!(
        psql(db, "SELECT v FROM kept ORDER BY v")?,
        "before the crash\nbefore the reboot\n"
    );
    // It knew it had not been shut down cleanly, and recovered.
    db.succeed("grep -q 'was interrupted\\|not properly shut down' /var/log/postgresql/postgresql-15-main.log")?;
    Ok(())
}
