// Store state → per-sidecar snapshots: resources parsed once per revision, registry endpoints merged, policies filtered per sidecar.
import { createHash } from 'node:crypto';
import type { Logger } from '../api/log.js';
import { DEFAULTS, type EndpointsResource, type MeshConfigResource, type Resource } from '../api/resources.js';
import { parseAddress } from '../api/validate-structure.js';
import type { Snapshot } from '../api/snapshot.js';
import { compileSnapshot } from './compiler.js';
import { storedResources } from './resources-api.js';
import type { MeshState, Registration } from './state.js';

export interface SidecarView {
  readonly service: string;
  readonly namespace: string;
}

export interface Compiled {
  readonly revision: number;
  readonly snapshot: Snapshot;
}

/** Registered sidecars become endpoints of their service: the address is their inbound listener. */
function registryEndpoints(regs: readonly Registration[], services: ReadonlySet<string>, log: Logger): EndpointsResource[] {
  const byService = new Map<string, Registration[]>();
  for (const r of regs) {
    const key = `${r.namespace}/${r.service}`;
    if (!services.has(key)) continue;
    byService.set(key, [...(byService.get(key) ?? []), r]);
  }
  const out: EndpointsResource[] = [];
  for (const [key, list] of byService) {
    const [namespace, service] = key.split('/');
    const endpoints = list.flatMap((r) => {
      const a = parseAddress(r.address);
      if (!a) {
        log.warn('registration_bad_address', { service, instance: r.instance, address: r.address });
        return [];
      }
      return [{ address: r.address, host: a.host, port: a.port, labels: r.labels }];
    });
    out.push({
      apiVersion: 'mesh/v1', kind: 'Endpoints', metadata: { name: `registry.${service}`, namespace },
      spec: { service, endpoints }, source: { file: 'registry', line: 0, lines: new Map() },
    });
  }
  return out;
}

/**
 * Sidecars check peers against MeshConfig's trust domain, so it must be the CA's. Apply refuses any other explicit
 * value (resources-api.ts); when it is left out, or there is no MeshConfig at all, the CA's is filled in here.
 */
function withTrustDomain(resources: readonly Resource[], caTrustDomain: string, log: Logger): Resource[] {
  const mesh = resources.find((r): r is MeshConfigResource => r.kind === 'MeshConfig');
  if (!mesh) {
    return [...resources, {
      apiVersion: 'mesh/v1', kind: 'MeshConfig', metadata: { name: 'default', namespace: 'default' },
      spec: { ...DEFAULTS.meshConfig, trustDomain: caTrustDomain }, source: { file: 'defaults', line: 0, lines: new Map() },
    }];
  }
  if (mesh.spec.trustDomain === caTrustDomain) return [...resources];
  if (mesh.source.lines.has('spec.trustDomain')) {
    log.error('mesh_config_trust_domain_mismatch', { meshConfig: mesh.spec.trustDomain, ca: caTrustDomain });
    return [...resources];
  }
  return resources.map((r) => (r === mesh ? { ...mesh, spec: { ...mesh.spec, trustDomain: caTrustDomain } } : r));
}

/** The whole mesh at the state's revision; per-sidecar views are cut from it. */
export function compileMesh(state: MeshState, log: Logger, caTrustDomain: string): Compiled {
  const stored = storedResources(state.resourceValues());
  // Stored resources were validated on write; an issue here means the store was edited behind our back.
  if (stored.issues.length) log.error('stored_resources_invalid', { issues: stored.issues });
  const resources = withTrustDomain(stored.resources, caTrustDomain, log);
  const services = new Set(resources.filter((r) => r.kind === 'Service').map((r) => `${r.metadata.namespace}/${r.metadata.name}`));
  const all: Resource[] = [...resources, ...registryEndpoints(state.registrations(), services, log)];
  return { revision: state.revision, snapshot: compileSnapshot(all, String(state.revision)) };
}

/** What one sidecar receives: every service and route (it may call any of them), but only its own inbound policies. */
export function viewFor(mesh: Compiled, who: SidecarView): { json: string; hash: string } {
  const s = mesh.snapshot;
  const view: Snapshot = {
    ...s,
    accessPolicies: s.accessPolicies.filter((p) => p.spec.service === who.service && p.namespace === who.namespace),
  };
  const json = JSON.stringify(view);
  // The hash ignores the version, so a revision that changes nothing for this sidecar is not pushed to it.
  const hash = createHash('sha256').update(JSON.stringify({ ...view, version: '' })).digest('hex').slice(0, 16);
  return { json, hash };
}
