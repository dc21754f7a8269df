# -*- coding: utf-8 -*-
# Copyright: cellctl developers
# Apache License 2.0 (see the repository's Cargo.toml)
"""Tests for the cellctl.vcd playbook: `x is cellctl.vcd.same_version(target)`."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.cellctl.vcd.plugins.filter.cellctl import same_version


class TestModule(object):
    def tests(self):
        return {"same_version": same_version}
