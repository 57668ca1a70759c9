import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { missingOverrides } from '../../src/guest/firecracker-kernel.js';
import { firecrackerConfigPath, firecrackerOverridesPath } from '../../src/guest/paths.js';

test('firecracker-config kernel: embers overrides what Firecracker leaves out, and the build notices an override olddefconfig dropped', async () => {
  const base = await readFile(firecrackerConfigPath(), 'utf8');
  const overrides = await readFile(firecrackerOverridesPath(), 'utf8');
  // the option this kit needs for ACPI-less device discovery is off in Firecracker's config
  assert.match(base, /^# CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES is not set$/m);
  assert.match(overrides, /^CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y$/m);
  assert.match(overrides, /^CONFIG_SERIO_I8042=y$/m);
  // the base config alone lacks every override; with them appended (as olddefconfig keeps them) nothing is missing
  assert.deepEqual(missingOverrides(base, overrides), [
    'CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y',
    'CONFIG_SERIO=y',
    'CONFIG_SERIO_I8042=y',
    'CONFIG_INPUT_KEYBOARD=y',
    'CONFIG_KEYBOARD_ATKBD=y',
  ]);
  assert.deepEqual(missingOverrides(`${base}\n${overrides}`, overrides), []);
  assert.deepEqual(missingOverrides('CONFIG_A=y\n', '# comment\nCONFIG_A=y\n# CONFIG_B is not set\n'), [
    '# CONFIG_B is not set',
  ]);
});
