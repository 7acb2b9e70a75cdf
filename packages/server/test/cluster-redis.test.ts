import { describeClusterConformance } from './support/cluster-conformance.js';
import { redisServerService } from './support/shared-services.js';

describeClusterConformance({ name: 'redis-server', create: redisServerService });
