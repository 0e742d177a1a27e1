// `mesh up --prometheus`: a prometheus beside the shop, scraping every sidecar and the control plane from the mesh's file_sd.
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

export interface PrometheusPlan {
  readonly command: string;
  readonly args: string[];
  readonly url: string;
}

/**
 * Writes shop/prometheus.yml and returns how to run prometheus on it. The control plane keeps <dir>/prometheus/targets.json
 * up to date (every sidecar's admin /metrics and its own --http /metrics), and prometheus re-reads that file by itself,
 * so sidecars that come and go are picked up without a restart. A 5 s scrape keeps `rate()` graphs lively in a demo.
 */
export async function prometheusSpec(o: { bin: string; shopDir: string; meshDir: string; port: number }): Promise<PrometheusPlan> {
  const config = path.join(o.shopDir, 'prometheus.yml');
  const data = path.join(o.shopDir, 'prometheus-data');
  await mkdir(data, { recursive: true });
  const targets = path.join(o.meshDir, 'prometheus', 'targets.json');
  await writeFile(config, [
    '# Written by "mesh up --prometheus"; rewritten at every start.',
    'global:',
    '  scrape_interval: 5s',
    '  evaluation_interval: 5s',
    'scrape_configs:',
    '  - job_name: trellis',
    '    file_sd_configs:',
    `      - files: [${JSON.stringify(targets)}]`,
    '        refresh_interval: 5s',
    '',
  ].join('\n'));
  const listen = `127.0.0.1:${o.port}`;
  return {
    command: o.bin,
    args: [`--config.file=${config}`, `--storage.tsdb.path=${data}`, `--web.listen-address=${listen}`, '--storage.tsdb.retention.time=1d'],
    url: `http://${listen}`,
  };
}
