// Test harness: builds DESIGN.md §3 resource documents (mesh/v1) as objects and renders them as multi-document YAML.
import { stringify } from 'yaml';

export type Doc = { apiVersion: 'mesh/v1'; kind: string; metadata: { name: string }; spec: Record<string, unknown> };

const doc = (kind: string, name: string, spec: Record<string, unknown>): Doc => ({ apiVersion: 'mesh/v1', kind, metadata: { name }, spec });

export interface ServiceDocs {
  name: string;
  /** Omitted: no Endpoints resource at all. */
  endpoints?: { address: string; labels?: Record<string, string> }[];
  subsets?: { name: string; labels: Record<string, string> }[];
  /** Extra TrafficPolicy spec fields (loadBalancer, outlierDetection, rateLimit, …); tls is always `disable`. */
  policy?: Record<string, unknown>;
}

/** Service + Endpoints (if any) + TrafficPolicy with plain-HTTP endpoints. */
export function service(s: ServiceDocs): Doc[] {
  const docs = [doc('Service', s.name, { protocol: 'http' })];
  if (s.endpoints) {
    docs.push(
      doc('Endpoints', s.name, {
        service: s.name,
        endpoints: s.endpoints.map((e) => ({ address: e.address, labels: e.labels ?? {} })),
      }),
    );
  }
  docs.push(
    doc('TrafficPolicy', s.name, {
      service: s.name,
      ...(s.subsets ? { subsets: s.subsets } : {}),
      ...(s.policy ?? {}),
      tls: { mode: 'disable' },
    }),
  );
  return docs;
}

export function route(name: string, hosts: string[], rules: Record<string, unknown>[]): Doc {
  return doc('Route', name, { hosts, rules });
}

export function meshConfig(spec: Record<string, unknown>): Doc {
  return doc('MeshConfig', 'default', spec);
}

export function toYaml(docs: Doc[]): string {
  return docs.map((d) => stringify(d)).join('---\n');
}
