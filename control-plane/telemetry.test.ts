// Tests for the control plane's /metrics registry: every mesh_control_plane_* metric present with the values fed to it,
// and the whole exposition (process metrics included) accepted by `promtool check metrics`.
import { describe, expect, it } from 'vitest';
import { parseMetrics, sumWhere } from '../test/harness/prom.js';
import { checkMetrics, promtoolBinary, REQUIRE_PROMTOOL } from '../test/harness/promtool.js';
import { ControlPlaneTelemetry } from './telemetry.js';

const promtool = promtoolBinary();

function sample(): ControlPlaneTelemetry {
  const t = new ControlPlaneTelemetry({ connectedSidecars: () => 3, storeRevision: () => 42, storeHealthy: () => false });
  t.pushed();
  t.pushed();
  t.acked(0.004);
  t.nacked();
  t.statsReports.labels('accepted').inc(5);
  return t;
}

describe('ControlPlaneTelemetry', () => {
  it('exports pushes, ACKs, NACKs, push latency, connected sidecars, store revision and health, and process metrics', async () => {
    const text = await sample().registry.metrics();
    const s = parseMetrics(text);
    const one = (name: string) => sumWhere(s.filter((x) => x.name === name), {});
    expect(one('mesh_control_plane_pushes_total')).toBe(2);
    expect(one('mesh_control_plane_acks_total')).toBe(1);
    expect(one('mesh_control_plane_nacks_total')).toBe(1);
    expect(one('mesh_control_plane_push_latency_seconds_count')).toBe(1);
    expect(sumWhere(s.filter((x) => x.name === 'mesh_control_plane_push_latency_seconds_bucket'), { le: '0.005' })).toBe(1);
    expect(sumWhere(s.filter((x) => x.name === 'mesh_control_plane_push_latency_seconds_bucket'), { le: '0.0025' })).toBe(0);
    expect(one('mesh_control_plane_connected_sidecars')).toBe(3);
    expect(one('mesh_control_plane_store_revision')).toBe(42);
    expect(one('mesh_control_plane_store_healthy')).toBe(0);
    expect(sumWhere(s.filter((x) => x.name === 'mesh_control_plane_stats_reports_total'), { result: 'accepted' })).toBe(5);
    expect(s.some((x) => x.name === 'process_resident_memory_bytes')).toBe(true);
  });

  it.skipIf(!promtool && !REQUIRE_PROMTOOL)(`passes promtool check metrics${promtool ? '' : ' (skipped: no promtool on PATH; CI=true makes this a failure)'}`, async () => {
    if (!promtool) throw new Error('promtool not found, and CI=true requires it (Debian package prometheus)');
    const r = await checkMetrics(promtool, await sample().registry.metrics());
    expect(r.output).toBe('');
    expect(r.code).toBe(0);
  });
});
