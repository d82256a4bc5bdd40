// The Event Grid subscription behind the blob-upload door. Deploy after the code
// is published: the webhook needs the Function App's blobs_extension system key,
// which exists only once the blob trigger is registered.
param functionAppName string
param storageAccountName string
param requestsContainer string = 'detection-requests'
@description('Suffix of the status files the blob door writes beside each request (triggers/blobdoor.py STATUS_SUFFIX).')
param statusSuffix string = '.status.json'
@description('Name of the blob-trigger function in function_app.py.')
param functionName string = 'request_upload'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource app 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource appHost 'Microsoft.Web/sites/host@2024-04-01' existing = {
  parent: app
  name: 'default'
}

resource topic 'Microsoft.EventGrid/systemTopics@2024-06-01-preview' = {
  name: '${storageAccountName}-blobs'
  location: resourceGroup().location
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource subscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2024-06-01-preview' = {
  parent: topic
  name: 'detection-requests'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${app.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${appHost.listKeys().systemKeys.blobs_extension}'
      }
    }
    // Only request files: NAME.json, not the door's own NAME.json.status.json (which also ends
    // in .json); an advanced filter on the subject leaves those out.
    filter: {
      includedEventTypes: ['Microsoft.Storage.BlobCreated']
      subjectBeginsWith: '/blobServices/default/containers/${requestsContainer}/blobs/'
      subjectEndsWith: '.json'
      advancedFilters: [
        {
          operatorType: 'StringNotEndsWith'
          key: 'Subject'
          values: [statusSuffix]
        }
      ]
    }
  }
}
