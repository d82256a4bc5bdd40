// Azure resources for the camera-trap detection batch service.
//
//   az deployment group create -g RG -f infra/main.bicep -p namePrefix=mdbatch gpuMaxNodes=16
//   func azure functionapp publish <functionAppName> --python
//   az deployment group create -g RG -f infra/eventgrid.bicep -p functionAppName=<functionAppName> storageAccountName=<storageAccountName>
//
// What it makes: a Log Analytics workspace with a workspace-based Application Insights, one storage account (Functions runtime + task hub, work files,
// results, the request drop container), a Flex Consumption Function App with a
// system-assigned identity, a Key Vault (RBAC), an Azure ML workspace with a
// low-priority GPU cluster that scales to zero, a user-assigned identity for
// the cluster, and every role assignment the managed identities need. No keys
// or secrets are written into app settings: identities do the work.

@description('Prefix for resource names (3-11 lowercase letters and digits).')
@minLength(3)
@maxLength(11)
param namePrefix string = 'mdbatch'
param location string = resourceGroup().location
@description('GPU VM size of the scoring cluster.')
param gpuVmSize string = 'Standard_NC4as_T4_v3'
@description('Most GPU nodes at once; also the number of shards in flight per request.')
param gpuMaxNodes int = 8
@description('Low priority nodes are much cheaper; pre-emption is handled (the scorer resumes from its checkpoint).')
@allowed(['LowPriority', 'Dedicated'])
param gpuTier string = 'LowPriority'
@description('Callers allowed to use the caller field when App Service authentication is off (comma separated).')
param callers string = ''

var suffix = uniqueString(resourceGroup().id)
var storageName = toLower('${namePrefix}${suffix}')
var workContainer = 'mdbatch-work'
var requestsContainer = 'detection-requests'
var deployContainer = 'app-package'

// Built-in role definition ids.
var roles = {
  blobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  blobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  blobDelegator: 'db58b8e5-c6ad-4a2a-8342-4190687cbf4a'
  queueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  tableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  kvSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
  kvSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  amlDataScientist: 'f6c7c914-8db3-469d-8ca1-694a8f32e121'
  managedIdentityOperator: 'f1a07417-d97a-45cb-824c-7a7467783830'
  // publishes all telemetry to an Application Insights resource with local auth off (Entra ID only)
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: take(storageName, 24)
  location: location
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false // identities only; output links are user-delegation SAS
    supportsHttpsTrafficOnly: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for c in [workContainer, requestsContainer, deployContainer]: {
  parent: blobService
  name: c
}]

// Workspace-based Application Insights (not classic): telemetry lands in this
// Log Analytics workspace. Local auth is off, so only Entra ID-authenticated telemetry is taken:
// the app's identity holds Monitoring Metrics Publisher on it (appInsightsRole below).
resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${namePrefix}-logs-${suffix}'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${namePrefix}-ai-${suffix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    DisableLocalAuth: true
    WorkspaceResourceId: logs.id
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: take('${namePrefix}-kv-${suffix}', 24)
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
  }
}

resource clusterIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${namePrefix}-gpu-${suffix}'
  location: location
}

resource workspace 'Microsoft.MachineLearningServices/workspaces@2024-04-01' = {
  name: '${namePrefix}-aml-${suffix}'
  location: location
  identity: { type: 'SystemAssigned' }
  properties: {
    storageAccount: storage.id
    keyVault: vault.id
    applicationInsights: insights.id
    friendlyName: 'Camera-trap detection batch scoring'
    systemDatastoresAuthMode: 'identity' // the storage account allows no shared keys
  }
}

resource gpuCluster 'Microsoft.MachineLearningServices/workspaces/computes@2024-04-01' = {
  parent: workspace
  name: 'gpu-cluster'
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${clusterIdentity.id}': {} }
  }
  properties: {
    computeType: 'AmlCompute'
    properties: {
      vmSize: gpuVmSize
      vmPriority: gpuTier
      scaleSettings: { minNodeCount: 0, maxNodeCount: gpuMaxNodes, nodeIdleTimeBeforeScaleDown: 'PT5M' }
    }
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${namePrefix}-plan-${suffix}'
  location: location
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: '${namePrefix}-fn-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deployContainer}'
          authentication: { type: 'SystemAssignedIdentity' }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: 40, instanceMemoryMB: 2048 }
      runtime: { name: 'python', version: '3.11' }
    }
    siteConfig: {
      appSettings: [
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'Authorization=AAD' }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'MDBATCH_TASK_HUB', value: 'mdbatch' }
        // the app folder is read-only (Flex Consumption runs from a package): scratch and state go to /tmp
        { name: 'MDBATCH_STATE_DIR', value: '/tmp/mdbatch-state' }
        { name: 'MDBATCH_STAGING_DIR', value: '/tmp/mdbatch-staging' }
        { name: 'MDBATCH_WORK_URL', value: '${storage.properties.primaryEndpoints.blob}${workContainer}' }
        { name: 'MDBATCH_SECRETS_BACKEND', value: 'keyvault' }
        { name: 'MDBATCH_KEY_VAULT_URL', value: vault.properties.vaultUri }
        { name: 'MDBATCH_COMPUTE_BACKEND', value: 'azureml' }
        { name: 'MDBATCH_AML_SUBSCRIPTION_ID', value: subscription().subscriptionId }
        { name: 'MDBATCH_AML_RESOURCE_GROUP', value: resourceGroup().name }
        { name: 'MDBATCH_AML_WORKSPACE', value: workspace.name }
        { name: 'MDBATCH_AML_COMPUTE', value: gpuCluster.name }
        { name: 'MDBATCH_AML_IDENTITY_CLIENT_ID', value: clusterIdentity.properties.clientId }
        { name: 'MDBATCH_MAX_IN_FLIGHT', value: string(gpuMaxNodes) }
        { name: 'MDBATCH_REQUESTS_CONTAINER', value: requestsContainer }
        { name: 'MDBATCH_CALLERS', value: callers }
      ]
    }
  }
}

// --- role assignments --------------------------------------------------------
// Function App: runtime storage (blobs, queues, tables for the task hub), user-delegation SAS
// for output links, parking request secrets, submitting and cancelling AML jobs, and
// attaching the cluster identity to jobs.
var appStorageGrants = [roles.blobDataOwner, roles.blobDelegator, roles.queueDataContributor, roles.tableDataContributor]

resource appStorageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in appStorageGrants: {
  scope: storage
  name: guid(storage.id, app.id, role)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

resource appVaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: vault
  name: guid(vault.id, app.id, roles.kvSecretsOfficer)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.kvSecretsOfficer)
  }
}

resource appWorkspaceRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: workspace
  name: guid(workspace.id, app.id, roles.amlDataScientist)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.amlDataScientist)
  }
}

resource appIdentityOperator 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: clusterIdentity
  name: guid(clusterIdentity.id, app.id, roles.managedIdentityOperator)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.managedIdentityOperator)
  }
}

// Telemetry: Application Insights takes only Entra ID-authenticated telemetry (DisableLocalAuth),
// and APPLICATIONINSIGHTS_AUTHENTICATION_STRING makes the app authenticate as its identity.
resource appInsightsRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: insights
  name: guid(insights.id, app.id, roles.monitoringMetricsPublisher)
  properties: {
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// GPU cluster identity: reads shard manifests and writes shard results in the work
// container, reads parked request secrets (the caller's SAS) by reference.
resource clusterStorageRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: storage
  name: guid(storage.id, clusterIdentity.id, roles.blobDataContributor)
  properties: {
    principalId: clusterIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.blobDataContributor)
  }
}

resource clusterVaultRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  scope: vault
  name: guid(vault.id, clusterIdentity.id, roles.kvSecretsUser)
  properties: {
    principalId: clusterIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.kvSecretsUser)
  }
}

output functionAppName string = app.name
output storageAccountName string = storage.name
output keyVaultUrl string = vault.properties.vaultUri
output workspaceName string = workspace.name
output gpuClusterIdentityClientId string = clusterIdentity.properties.clientId
output logAnalyticsWorkspaceId string = logs.id
