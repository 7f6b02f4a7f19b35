//! A port of nixpkgs' `nixos/tests/openssh.nix` to Debian machines: the nodes and subtests
//! that need no NixOS package override (manual-authkey, socket activation on another port,
//! localhost-only, allowed-users, and "no per-connection unit failed"). Left out: the
//! no-openssl, algorithm, PAM, match-rule, sftp and keygen-only nodes, which rebuild or
//! configure OpenSSH in NixOS-specific ways.
//!
//! NixOS's `services.openssh.startWhenNeeded` is Debian's `ssh.socket`; its
//! `listenAddresses` and `AllowUsers` are lines of `sshd_config.d`.

use nspawn::{Group, Machine};

const SSH: &str = "ssh -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no";

fn sshd(m: &Machine, config: &str) -> nspawn::Result<()> {
    m.succeed("apt-get install -y --no-install-recommends openssh-server iproute2")?;
    m.create_dir_all("/etc/ssh/sshd_config.d")?;
    m.write("/etc/ssh/sshd_config.d/test.conf", config)?;
    m.succeed("systemctl restart ssh")?;
    Ok(())
}

fn server(m: &Machine) -> nspawn::Result<()> {
    sshd(m, "")?;
    m.wait_for_unit("ssh.service", m.wait_timeout()).map(drop)
}

/// Socket-activated: sshd only runs per connection.
fn server_lazy(m: &Machine) -> nspawn::Result<()> {
    sshd(m, "")?;
    m.succeed("systemctl disable --now ssh.service && systemctl enable --now ssh.socket")?;
    Ok(())
}

/// Socket-activated on port 2222 (the original's `aaa-server-lazy-socket`).
fn server_lazy_socket(m: &Machine) -> nspawn::Result<()> {
    server_lazy(m)?;
    m.create_dir_all("/etc/systemd/system/ssh.socket.d")?;
    m.write(
        "/etc/systemd/system/ssh.socket.d/port.conf",
        "[Socket]\nListenStream=\nListenStream=0.0.0.0:2222\n",
    )?;
    m.succeed("systemctl daemon-reload && systemctl restart ssh.socket")?;
    Ok(())
}

fn server_localhost_only(m: &Machine) -> nspawn::Result<()> {
    sshd(m, "ListenAddress 127.0.0.1:22\n")
}

fn server_allowed_users(m: &Machine) -> nspawn::Result<()> {
    sshd(m, "AllowUsers alice bob\n")?;
    for user in ["alice", "bob", "carol"] {
        m.succeed(&format!("useradd -m {user}"))?;
    }
    Ok(())
}

fn client(m: &Machine) -> nspawn::Result<()> {
    m.succeed("apt-get install -y --no-install-recommends openssh-client")?;
    m.succeed("ssh-keygen -t ed25519 -f /root/.ssh/id_ed25519 -N ''")?;
    Ok(())
}

/// The set-ups install packages: the zone needs its way out.
const NODES: Group = Group::new(&[
    ("server", "bookworm"),
    ("server-lazy", "bookworm"),
    ("aaa-server-lazy-socket", "bookworm"),
    ("server-localhost-only", "bookworm"),
    ("server-allowed-users", "bookworm"),
    ("client", "bookworm"),
])
.network("zone:openssh+outside")
.setups(&[
    ("server", server),
    ("server-lazy", server_lazy),
    ("aaa-server-lazy-socket", server_lazy_socket),
    ("server-localhost-only", server_localhost_only),
    ("server-allowed-users", server_allowed_users),
    ("client", client),
]);

/// The client's public key in `user`'s `authorized_keys` on `server`.
fn authorize(client: &Machine, server: &Machine, user: &str) -> nspawn::Result<()> {
    let key = client.succeed("ssh-keygen -y -f /root/.ssh/id_ed25519")?;
    let home = if user == "root" {
        "/root".to_string()
    } else {
        format!("/home/{user}")
    };
    server.create_dir_all(format!("{home}/.ssh"))?;
    server.write(format!("{home}/.ssh/authorized_keys"), key)?;
    server.succeed(&format!(
        "chown -R {user}: {home}/.ssh && chmod 700 {home}/.ssh"
    ))?;
    Ok(())
}

#[nspawn::test(group = NODES)]
fn manual_authkey(client: &Machine, server: &Machine, server_lazy: &Machine) -> nspawn::Result<()> {
    authorize(client, server, "root")?;
    authorize(client, server_lazy, "root")?;
    client.succeed(&format!("{SSH} server 'echo hello world' >&2"))?;
    client.succeed(&format!("{SSH} server-lazy 'echo hello world' >&2"))?;
    // None of the per-connection units failed.
    server_lazy.fail("systemctl is-failed 'ssh@*.service'")?;
    Ok(())
}

#[nspawn::test(group = NODES)]
fn socket_activation_on_another_port(
    client: &Machine,
    aaa_server_lazy_socket: &Machine,
) -> nspawn::Result<()> {
    authorize(client, aaa_server_lazy_socket, "root")?;
    client.port(2222).on(aaa_server_lazy_socket).wait_open()?;
    client.succeed(&format!("{SSH} -p 2222 aaa-server-lazy-socket true"))?;
    Ok(())
}

#[nspawn::test(group = NODES)]
fn localhost_only(client: &Machine, server_localhost_only: &Machine) -> nspawn::Result<()> {
    server_localhost_only.succeed("ss -nlt | grep '127.0.0.1:22'")?;
    // And not from elsewhere: the port is closed to the client.
    client.port(22).on(server_localhost_only).wait_closed()?;
    Ok(())
}

#[nspawn::test(group = NODES)]
fn allowed_users(client: &Machine, server_allowed_users: &Machine) -> nspawn::Result<()> {
    for user in ["alice", "bob", "carol"] {
        authorize(client, server_allowed_users, user)?;
    }
    client.succeed(&format!("{SSH} alice@server-allowed-users true"))?;
    client.succeed(&format!("{SSH} bob@server-allowed-users true"))?;
    client.fail(&format!("{SSH} carol@server-allowed-users true"))?;
    Ok(())
}
