// The soak's slopes: young-generation steps are taken out, and the steady slope starts at the first full GC.
import { describe, expect, it } from 'vitest';
import { slopePer10Min, slopesOf, type ProcessSamples } from './soak-report.js';

function samples(minutes: number, fn: (t: number) => { rss: number; young: number; major: number }): ProcessSamples {
  const s: ProcessSamples = { t: [], rssMb: [], fds: [], eventLoopP99Ms: [], heapUsedMb: [], heapTotalMb: [], externalMb: [], newSpaceMb: [], majorGcs: [] };
  for (let t = 5; t <= minutes * 60; t += 5) {
    const v = fn(t);
    s.t.push(t);
    s.rssMb.push(v.rss);
    s.newSpaceMb.push(v.young);
    s.majorGcs.push(v.major);
    s.fds.push(20);
    for (const xs of [s.eventLoopP99Ms, s.heapUsedMb, s.heapTotalMb, s.externalMb]) xs.push(1);
  }
  return s;
}

describe('soak slopes', () => {
  it('a steady line has the slope it was drawn with', () => {
    const t = [0, 60, 120, 180, 240, 300, 360];
    expect(slopePer10Min(t, t.map((x) => 100 + x / 600), 0)).toBeCloseTo(1, 5);
  });

  it('young-generation steps move RSS but not RSS less the young generation', () => {
    // The young generation flips between 1 and 33 MB every 7 minutes, late in the run more often at its top.
    const s = samples(30, (t) => {
      const young = t > 1200 || Math.floor(t / 420) % 2 === 1 ? 33 : 1;
      return { rss: 100 + young, young, major: 0 };
    });
    const r = slopesOf(s, 300);
    expect(Math.abs(r.rssSlopeMbPer10Min)).toBeGreaterThan(3);
    expect(r.oldRssSlopeMbPer10Min).toBeCloseTo(0, 5);
    expect(r.steadyFromS).toBeNaN();
  });

  it('the steady slope starts at the first full GC after the warm-up began', () => {
    // Old-generation garbage grows 1 MB a minute until the full GC at 16 minutes, then RSS is flat.
    const s = samples(30, (t) => ({ rss: 100 + Math.min(t, 960) / 60, young: 16, major: t >= 960 ? 1 : 0 }));
    const r = slopesOf(s, 300);
    expect(r.steadyFromS).toBe(960);
    expect(r.oldRssSlopeMbPer10Min).toBeGreaterThan(3);
    expect(Math.abs(r.steadyOldRssSlopeMbPer10Min)).toBeLessThan(0.01);
  });

  it('a full GC during start-up does not count', () => {
    const s = samples(30, (t) => ({ rss: 100, young: 16, major: t >= 10 ? 1 : 0 }));
    expect(slopesOf(s, 300).steadyFromS).toBeNaN();
  });
});
