// Test harness: a TCP relay on 127.0.0.1:0 that can drop every connection and refuse new ones (cut) and accept them again (heal),
// so one process loses its peer (e.g. the control plane loses etcd) while others keep it. A fault-proxy.ts preset.
import { startFaultProxy } from './fault-proxy.js';

export interface Relay {
  /** "127.0.0.1:PORT" */
  readonly endpoint: string;
  cut(): void;
  heal(): void;
  close(): Promise<void>;
}

export async function startRelay(targetPort: number, targetHost = '127.0.0.1'): Promise<Relay> {
  const host = targetHost.includes(':') ? `[${targetHost}]` : targetHost;
  const proxy = await startFaultProxy({ target: `${host}:${targetPort}` });
  return {
    endpoint: proxy.endpoint,
    cut() {
      // New connections are accepted and closed at once (not refused), as this relay always did.
      void proxy.refuse('destroy');
      proxy.dropAll();
    },
    heal() {
      void proxy.heal();
    },
    close: () => proxy.close(),
  };
}
