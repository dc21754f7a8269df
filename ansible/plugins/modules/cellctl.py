# -*- coding: utf-8 -*-
# Copyright: cellctl developers
# Apache License 2.0 (see the repository's Cargo.toml)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: cellctl
short_description: Run the cellctl agent on a VMware Cloud Director cell
version_added: "0.1.0"
description:
  - Runs the installed C(cellctl) binary with C(--json) and returns its one JSON document as the
    task's result, its keys at the top level (C(outcome), C(cell_left), C(steps), C(upgrade),
    C(installed_version), ...).
  - C(changed) is true when the document's C(cell_left) is anything but C(unchanged) (a read-only
    command, C(status) or C(preflight), never changes anything).
  - C(failed) follows cellctl's exit code; C(msg) is the error's message.
  - No password passes through Ansible. cellctl reads its own password file (C(password_file) in
    its config) or the systemd credential C(vcd-password); this module never sets or forwards one.
  - In check mode every command but C(status) and C(report) runs C(cellctl preflight) instead (with O(package)
    when given), which changes nothing.
options:
  command:
    description:
      - The cellctl command to run. C(report) is C(cellctl report --last), the saved report of
        the cell's last run (after an appliance's reboot: its continuation's).
    type: str
    required: true
    choices: [status, preflight, drain, install, start, db-upgrade, report]
  package:
    description:
      - The installer package on the cell, for C(preflight) and C(install).
    type: path
  binary:
    description:
      - The cellctl program.
    type: path
    default: cellctl
  config:
    description:
      - cellctl's config file (C(--config)); cellctl's own default is C(/etc/cellctl/config.toml).
    type: path
  allow_last_cell:
    description:
      - C(drain --allow-last-cell), for the last cell of a full-outage upgrade.
    type: bool
    default: false
  retry_install:
    description:
      - C(install --retry-install), after the cause of a failed install was fixed.
    type: bool
    default: false
  deadline:
    description:
      - C(drain --deadline), e.g. C(45m).
    type: str
  health_deadline:
    description:
      - C(start --health-deadline), e.g. C(20m).
    type: str
  extra_args:
    description:
      - More arguments for the command, after it (for example C(["--on-deadline", "force"])).
    type: list
    elements: str
    default: []
notes:
  - Runs on the cell itself (or with C(ansible_connection=local) against a simulated cell).
  - The exit codes are cellctl's (see its README); the document's C(exit_code) repeats it.
author:
  - cellctl developers
"""

EXAMPLES = r"""
- name: Check a cell before an upgrade (changes nothing)
  cellctl.vcd.cellctl:
    command: preflight
    package: /var/lib/cellctl/packages/vmware-vcloud-director-distribution-10.6.1-24268925.bin

- name: Drain the cell (maintenance message, quiesce, wait for jobs, shut down)
  cellctl.vcd.cellctl:
    command: drain
    deadline: 45m

- name: Install the package on the stopped cell
  cellctl.vcd.cellctl:
    command: install
    package: /var/lib/cellctl/packages/vmware-vcloud-director-distribution-10.6.1-24268925.bin

- name: Read the cell's state
  cellctl.vcd.cellctl:
    command: status
    config: /etc/cellctl/config.toml
  register: cell

- name: Show its installed version
  ansible.builtin.debug:
    msg: "{{ cell.installed_version }}"
"""

RETURN = r"""
rc:
  description: cellctl's exit code.
  returned: always
  type: int
  sample: 0
cmd:
  description: The command line that ran (it never holds a password).
  returned: always
  type: list
  elements: str
msg:
  description: The error's message, or a one-line summary on success.
  returned: always
  type: str
outcome:
  description: The document's outcome (C(shut_down), C(installed), C(started), C(ok), C(failed), ...).
  returned: when cellctl printed its document
  type: str
cell_left:
  description: How the command left the cell (C(unchanged), C(shut_down), C(running), ...).
  returned: when the command may change the cell
  type: str
steps:
  description: The steps taken, each with C(step), C(status), C(started_at), C(ended_at), C(detail).
  returned: when the command took steps
  type: list
  elements: dict
installed_version:
  description: The installed version (C(status), C(preflight)).
  returned: for status and preflight
  type: str
up_to_date:
  description: C(preflight): the cell already runs the package's version.
  returned: for preflight
  type: bool
error:
  description: The document's error (C(kind), C(message)) or null.
  returned: when cellctl printed its document
  type: dict
stderr:
  description: The end of cellctl's log (stderr), at most 4 KiB.
  returned: always
  type: str
"""

import json
import subprocess

from ansible.module_utils.basic import AnsibleModule

# Result keys that belong to Ansible: a document key of the same name is kept under `cellctl_`.
RESERVED = frozenset(["changed", "failed", "msg", "rc", "cmd", "stderr", "stdout", "invocation", "skipped"])
STDERR_TAIL = 4096
# Commands that change nothing (a report's `cell_left` is its run's, not this call's).
READ_ONLY = ("status", "preflight", "report")


def build_argv(p, command):
    argv = [p["binary"]]
    if p["config"]:
        argv += ["--config", p["config"]]
    argv += ["--json", command]
    if command in ("preflight", "install") and p["package"]:
        argv.append(p["package"])
    if command == "drain":
        if p["allow_last_cell"]:
            argv.append("--allow-last-cell")
        if p["deadline"]:
            argv += ["--deadline", p["deadline"]]
    if command == "install" and p["retry_install"]:
        argv.append("--retry-install")
    if command == "start" and p["health_deadline"]:
        argv += ["--health-deadline", p["health_deadline"]]
    if command == "report":
        argv.append("--last")
    if command == p["command"]:
        argv += p["extra_args"]
    return argv


def first_document(stdout):
    """cellctl prints exactly one JSON document on stdout; None when it printed none."""
    text = stdout.strip()
    if not text:
        return None
    try:
        doc, _ = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def main():
    module = AnsibleModule(
        argument_spec=dict(
            command=dict(type="str", required=True, choices=["status", "preflight", "drain", "install", "start", "db-upgrade", "report"]),
            package=dict(type="path"),
            binary=dict(type="path", default="cellctl"),
            config=dict(type="path"),
            allow_last_cell=dict(type="bool", default=False),
            retry_install=dict(type="bool", default=False),
            deadline=dict(type="str"),
            health_deadline=dict(type="str"),
            extra_args=dict(type="list", elements="str", default=[]),
        ),
        required_if=[("command", "install", ["package"])],
        supports_check_mode=True,
    )
    p = module.params
    command = p["command"]
    if module.check_mode and command not in READ_ONLY:
        command = "preflight"
    argv = build_argv(p, command)
    # No standard input (cellctl prompts for a password only on a terminal, and must not here),
    # and nothing added to the environment: the password comes from cellctl's own sources.
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    except OSError as e:
        module.fail_json(msg="cannot run %s: %s (set the module's `binary`)" % (argv[0], e), rc=127, cmd=argv)
    rc = done.returncode if done.returncode >= 0 else 128 - done.returncode
    stdout = done.stdout.decode("utf-8", "replace")
    stderr = done.stderr.decode("utf-8", "replace")
    tail = stderr[-STDERR_TAIL:]
    doc = first_document(stdout)
    if doc is None:
        module.fail_json(
            msg="cellctl printed no JSON document (exit %d): %s" % (rc, tail.strip().splitlines()[-1:] or "no output"),
            rc=rc,
            cmd=argv,
            stderr=tail,
        )
    result = {}
    for key, value in doc.items():
        result["cellctl_" + key if key in RESERVED else key] = value
    error = doc.get("error") or {}
    left = doc.get("cell_left")
    result.update(
        rc=rc,
        cmd=argv,
        stderr=tail,
        changed=left is not None and left != "unchanged" and command not in READ_ONLY,
    )
    if rc != 0:
        result["msg"] = error.get("message") or "cellctl %s exited %d" % (command, rc)
        module.fail_json(**result)
    result["msg"] = "cellctl %s: %s" % (command, doc.get("outcome", "ok"))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
