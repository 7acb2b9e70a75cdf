import { describeClusterConformance } from './support/cluster-conformance.js';
import { memoryHubService } from './support/shared-services.js';

describeClusterConformance({ name: 'in-process hub', create: memoryHubService });
