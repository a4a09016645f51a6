#!/usr/bin/env bash
# Turn a fresh Debian or Raspberry Pi OS box into a crash cart, from the checkout this script is
# in: Debian packages, the `cartd` system user and group, cartd in /opt/cartd/venv (linked from
# /usr/local/bin/cartd), /etc/cartd/cartd.toml (never overwritten), the systemd units, the udev
# rules, then cartd.service enabled and started.
#
#   sudo deploy/install.sh              install, or upgrade to this checkout (idempotent)
#   sudo deploy/install.sh --kiosk      also show the TUI on tty1 instead of a login prompt
#   sudo deploy/install.sh --uninstall  remove units, rules, /opt/cartd and the link; keep the
#                                       records (/var/lib/cartd), the config (/etc/cartd) and
#                                       the user and group
#   deploy/install.sh --dry-run [...]   print each action instead of doing it (no root needed)
set -euo pipefail

SOURCE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly SOURCE_DIR
readonly PREFIX=/opt/cartd
readonly VENV="$PREFIX/venv"
readonly BIN_LINK=/usr/local/bin/cartd
readonly CONFIG_DIR=/etc/cartd
readonly CONFIG="$CONFIG_DIR/cartd.toml"
readonly STATE_DIR=/var/lib/cartd
readonly UNIT_DIR=/etc/systemd/system
readonly RULES_DIR=/etc/udev/rules.d
readonly RULES=60-cartd.rules
readonly USER_NAME=cartd
# Debian's own Python (python3-venv below), which the service's user can run: a python3 that
# comes first on root's PATH may live where that user cannot reach it (pyenv under /root).
readonly PYTHON=/usr/bin/python3
readonly KIOSK_UNIT=cartd-tui@tty1.service
# What building and running cartd[systemd] needs: the venv, a compiler and libsystemd for
# systemd-python, ip(8) for USB-Ethernet debug links, udevadm, and setfacl for the udev rules.
readonly PACKAGES=(python3-venv python3-dev gcc pkg-config libsystemd-dev iproute2 udev acl)

dry_run=0
kiosk=0
uninstall=0

usage() {
    sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

for argument in "$@"; do
    case "$argument" in
        --dry-run) dry_run=1 ;;
        --kiosk) kiosk=1 ;;
        --uninstall) uninstall=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "install.sh: unknown option: $argument" >&2
            usage >&2
            exit 2
            ;;
    esac
done

# Each change to the system goes through `run`: done, or printed with --dry-run.
run() {
    if ((dry_run)); then
        printf '+'
        printf ' %q' "$@"
        printf '\n'
    else
        "$@"
    fi
}

say() {
    printf '%s\n' "$*"
}

# The end of the summary's first line.
done_note() {
    if ((dry_run)); then
        printf ' (dry run: nothing was changed)'
    fi
}

# Whether a service manager and udevd are running: not in a chroot or an image being built, where
# units are enabled for the next boot and rules apply when udev starts. A dry run shows what a
# booted cart would do.
systemd_running() {
    ((dry_run)) || [[ -d /run/systemd/system ]]
}

udevd_running() {
    ((dry_run)) || udevadm control --ping >/dev/null 2>&1
}

require_root() {
    if ((!dry_run)) && ((EUID != 0)); then
        echo "install.sh: run it as root (sudo $0 ...), or with --dry-run to see what it does" >&2
        exit 1
    fi
}

install_cart() {
    local missing=() file
    for file in deploy/cartd.service deploy/cartd-tui@.service deploy/cartd.toml.example \
        "udev/$RULES" pyproject.toml; do
        [[ -f "$SOURCE_DIR/$file" ]] || missing+=("$file")
    done
    if ((${#missing[@]})); then
        echo "install.sh: $SOURCE_DIR is not a whole cartd checkout: missing ${missing[*]}" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null; then
        echo "install.sh: needs Debian or Raspberry Pi OS (apt-get not found)" >&2
        exit 1
    fi

    say "== Debian packages"
    run env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${PACKAGES[@]}"

    say "== user and group $USER_NAME"
    if getent group "$USER_NAME" >/dev/null; then
        say "group $USER_NAME exists"
    else
        run groupadd --system "$USER_NAME"
    fi
    if id -u "$USER_NAME" >/dev/null 2>&1; then
        say "user $USER_NAME exists"
        # dialout: the serial ports (the unit adds it too, for the daemon's process).
        run usermod --append --groups dialout "$USER_NAME"
    else
        run useradd --system --gid "$USER_NAME" --groups dialout --home-dir "$STATE_DIR" \
            --no-create-home --shell /usr/sbin/nologin --comment "cartd crash cart" "$USER_NAME"
    fi

    say "== cartd in $VENV, from $SOURCE_DIR"
    if [[ -x "$VENV/bin/python" && "$(readlink -f "$VENV/bin/python")" == /usr/* ]]; then
        say "$VENV exists"
    else
        # None yet, or one on a Python the service's user may not be able to run: made anew.
        run rm -rf "$VENV"
        run install -d -m 0755 "$PREFIX"
        run "$PYTHON" -m venv "$VENV"
    fi
    # A copy, not an editable install: the checkout may be moved or deleted afterwards. Running
    # the script again installs the checkout's current version over it. pip builds in the source
    # tree, so it builds from a clean copy of the package: no root-owned build/ or egg-info in
    # the engineer's checkout, and no stale build/ from an earlier build in the install.
    local build_dir='/tmp/cartd-build.XXXXXX'
    if ((!dry_run)); then
        build_dir="$(mktemp -d /tmp/cartd-build.XXXXXX)"
    fi
    run cp -r "$SOURCE_DIR/pyproject.toml" "$SOURCE_DIR/README.md" "$SOURCE_DIR/cartd" \
        "$build_dir/"
    run "$VENV/bin/pip" install --quiet --disable-pip-version-check "${build_dir}[systemd]"
    run rm -rf "$build_dir"
    run ln -sfn "$VENV/bin/cartd" "$BIN_LINK"

    say "== configuration and directories"
    run install -d -m 0755 "$CONFIG_DIR"
    if [[ -e "$CONFIG" ]]; then
        say "$CONFIG exists: kept as it is (compare with $SOURCE_DIR/deploy/cartd.toml.example)"
    else
        # It may hold KDNET keys: readable by root and the daemon only.
        run install -m 0640 -o root -g "$USER_NAME" "$SOURCE_DIR/deploy/cartd.toml.example" \
            "$CONFIG"
    fi
    # systemd creates both with StateDirectory=/RuntimeDirectory= too; made here so that the
    # records' place exists (with the right owner) before the first start.
    run install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" "$STATE_DIR"

    say "== systemd units and udev rules"
    run install -m 0644 "$SOURCE_DIR/deploy/cartd.service" "$UNIT_DIR/cartd.service"
    run install -m 0644 "$SOURCE_DIR/deploy/cartd-tui@.service" "$UNIT_DIR/cartd-tui@.service"
    run install -m 0644 "$SOURCE_DIR/udev/$RULES" "$RULES_DIR/$RULES"
    if udevd_running; then
        run udevadm control --reload
        # Devices plugged in before the rules existed: their groups, /dev/cartd names and the
        # FTDI latency (an attribute of the usb-serial device) are set now.
        run udevadm trigger --action=change --subsystem-match=tty --subsystem-match=usb \
            --subsystem-match=usb-serial
    else
        say "udevd is not running: the rules apply when it starts"
    fi

    say "== services"
    if systemd_running; then
        run systemctl daemon-reload
    fi
    run systemctl enable cartd.service
    if ((kiosk)); then
        # Its unit conflicts with getty@tty1: tty1 shows the TUI instead of a login prompt.
        run systemctl enable "$KIOSK_UNIT"
    fi
    if systemd_running; then
        # restart, not start: after an upgrade the new code runs. The targets' sessions resume.
        run systemctl restart cartd.service
        if ((kiosk)); then
            run systemctl restart "$KIOSK_UNIT"
        fi
    else
        say "systemd is not running: the services start at the next boot"
    fi

    say ""
    say "cartd is installed$(done_note):"
    say "  program        $BIN_LINK -> $VENV/bin/cartd"
    say "  configuration  $CONFIG"
    say "  records        $STATE_DIR"
    say "  units          $UNIT_DIR/cartd.service, $UNIT_DIR/cartd-tui@.service"
    say "  udev rules     $RULES_DIR/$RULES (stable names in /dev/cartd/)"
    if ((kiosk)); then
        say "  kiosk          the TUI on tty1 ($KIOSK_UNIT)"
    else
        say "  kiosk          not enabled (install.sh --kiosk shows the TUI on tty1)"
    fi
    say ""
    say "Plug in the target's cable, then:"
    say "  systemctl status cartd        is the daemon running, and what it is doing"
    say "  cartd status                  links and targets"
    say "  journalctl -u cartd           the daemon's log"
    say "  cartd tui                     the full-screen view"
    say "Engineers who use the cart join the group: usermod -aG $USER_NAME NAME (then log in again)."
}

uninstall_cart() {
    local unit
    say "== services"
    if systemd_running; then
        for unit in "$KIOSK_UNIT" cartd.service; do
            run systemctl disable --now "$unit" || true
        done
    else
        for unit in "$KIOSK_UNIT" cartd.service; do
            run systemctl disable "$unit" || true
        done
    fi

    say "== units, udev rules, program"
    run rm -f "$UNIT_DIR/cartd.service" "$UNIT_DIR/cartd-tui@.service" "$RULES_DIR/$RULES"
    if systemd_running; then
        run systemctl daemon-reload
    fi
    if udevd_running; then
        run udevadm control --reload
    fi
    # Only our link: a cartd installed some other way stays.
    if ((dry_run)) || [[ "$(readlink "$BIN_LINK" 2>/dev/null)" == "$VENV/bin/cartd" ]]; then
        run rm -f "$BIN_LINK"
    fi
    run rm -rf "$PREFIX"

    say ""
    say "cartd is uninstalled$(done_note)."
    say "Kept: the records in $STATE_DIR, the configuration in $CONFIG_DIR, the user and group"
    say "$USER_NAME and the Debian packages. To remove those too:"
    # userdel also removes the group when it is the user's own and has no other members.
    say "  rm -rf $STATE_DIR $CONFIG_DIR && userdel $USER_NAME && (groupdel $USER_NAME || true)"
}

require_root
if ((uninstall)); then
    uninstall_cart
else
    install_cart
fi
